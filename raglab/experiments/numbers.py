"""Numbers read from the records in ``results/``, each named by a placeholder that says where it comes from.

README.md and docs/ state numbers in generated tables and in checked prose claims (``raglab.experiments.tables``).
Both are written as text with placeholders, and ``Records.render`` replaces each placeholder with the number the
records give, formatted as ``make baseline`` and ``python -m raglab.experiments.compare`` print it. A PATH is
``RUN/TRACK/SPLIT/SYSTEM`` of a per-query file, as ``compare --pair`` takes it (``real-cpu-rag/rag
retrieval/test/bm25``):

    {mean:PATH:METRIC}           40.00                    the mean over the per-query file
    {pm:PATH:METRIC}             ±5.75                    half its 95% bootstrap interval (CMRC: by passage)
    {mean_pm:PATH:METRIC}        40.00 ±5.75              both, as make baseline prints them
    {n:PATH} {passages:PATH}     300  179                 the questions, and the passages they ask about
    {delta:NEW=OLD:METRIC}       +29.67 [+24.30, +35.04]  paired difference with its 95% paired interval
    {diff:..} {interval:..}      +29.67  [+24.30, +35.04] each half of it
    {noise:NEW=OLD:METRIC}       beyond noise             or "within noise": whether the interval holds 0
    {percentiles:PATH:FIELD}     271 / 454                p50 / p95 (nearest rank) of a per-query field
    {value:RUN:FILE.KEY[:%]}     1,288                    a value of results/RUN/metrics/FILE.json
    {param:RUN:GROUP.KEY}        1,600                    a value of the record's params.yaml
    {report:RUN:STAGE.KEY}       1,802                    a count of a stage's report (results/RUN/reports/)
    {time:RUN:FILE.KEY:s|min}    34 min                   a timing of the metrics file (keys ending in _s)
    {machine:RUN[:STAGE]}        2-core Intel Xeon, ...   the record's machine.json (a stage's own, if it has
                                                          one), as machine_label says it
    {brief:NAME}                 (quoted text)            the brief's reference numbers (docs/tables.yaml)

A timing means little without its machine: a line that prints ``{time:RUN:FILE...}`` must print the machine of
the stage that was timed (``TIMED_BY``: the stage that writes FILE, or serve_infer for a score's latency) too,
and ``value`` refuses a key that is a timing. Deltas are computed by ``compare.system_pairs`` (the same
seeded paired bootstrap as a pull request's comment), so a number here is the number those commands print.
"""

from __future__ import annotations

import json
import re
from functools import cache, cached_property
from pathlib import Path
from typing import Any

from raglab.core.machine import machine_label
from raglab.evaluation.intervals import cluster_of
from raglab.evaluation.metrics import percentiles
from raglab.experiments.compare import Scores, fmt, mean_with_interval, per_query_scores, system_pairs, workspace_reader
from raglab.experiments.records import RECORDS, REPORTS, record_machine, stage_machine
from raglab.params.loader import read_yaml

KINDS = ("mean_pm", "mean", "pm", "n", "passages", "delta", "diff", "interval", "noise", "percentiles", "value",
         "param", "report", "time", "machine", "brief")
PLACEHOLDER = re.compile(r"\{(" + "|".join(KINDS) + r"):([^{}\n]*)\}")
TIME = re.compile(r"\{time:([^:{}]+):([^.:{}]+)\.")
MACHINE = re.compile(r"\{machine:([^:{}]+):?([^:{}]*)\}")
# The stage a timing of a metrics file measures: the training stages write their own, the score stages report the
# latency serve_infer measured.
TIMED_BY = {"retrieval": "serve_infer_retrieval", "generation": "serve_infer_generation", "rag": "serve_infer_rag",
            "math": "serve_infer_math"}


class NumberError(ValueError):
    """A placeholder that names nothing in the records, or a timing printed without its machine."""


def signed(metric: str, value: float) -> str:
    """A signed number as compare prints it, with a typographic minus, and zero unsigned."""
    text = fmt(metric, value, signed=True)
    return text[1:] if float(text) == 0 else text.replace("-", "−")


def number(value: Any, unit: str = "") -> str:
    """A value of a metrics or params file: counts with thousands separators, shares (``%``) to 0.1 points."""
    if unit == "%":
        return f"{value * 100:.1f} %"
    if unit:
        raise NumberError(f"unit {unit!r}: only '%' (a share) is known; timings are {{time:...}}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{int(value):,}" if float(value).is_integer() else f"{value:.3f}"
    return str(value)


def duration(seconds: float, unit: str) -> str:
    """Seconds as ``34 min`` (``min``), ``2,041 s`` or ``0.28 s`` (``s``: two decimals under 10 s)."""
    if unit == "min":
        return f"{seconds / 60:.0f} min"
    if unit == "s":
        return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:,.0f} s"
    raise NumberError(f"time unit {unit!r}: s or min")


def dig(tree: Any, keys: list[str], where: str) -> Any:
    """``tree[k1][k2]...``; a key may hold dots itself (a report's ``wrote.questions.jsonl``): the shortest run of
    the dotted parts that is a key is taken at each level."""
    i = 0
    while i < len(keys):
        for j in range(i + 1, len(keys) + 1):
            key = ".".join(keys[i:j])
            if isinstance(tree, dict) and key in tree:
                tree, i = tree[key], j
                break
        else:
            raise NumberError(f"{where} has no {'.'.join(keys)}")
    return tree


class Records:
    """The records of one checkout (``repo/results``): per-query scores (read once), metrics files, params and
    machines, and the brief's quoted reference numbers."""

    def __init__(self, repo: str | Path = ".", brief: dict[str, str] | None = None, resamples: int = 2000):
        self.repo = Path(repo)
        self.brief = brief or {}
        self.resamples = resamples
        self.pair = cache(self._pair)  # each number is computed once, however many blocks and claims quote it
        self.interval = cache(self._interval)

    @cached_property
    def scores(self) -> Scores:
        """The records' per-query scores only: the pipeline's own (``data/score``) change with every run."""
        return {k: v for k, v in per_query_scores(*workspace_reader(str(self.repo))).items() if k[0] != "pipeline"}

    def rows(self, path: str) -> dict[str, dict[str, float]]:
        key = tuple(path.split("/"))
        if len(key) != 4 or key not in self.scores:
            raise NumberError(f"{path!r} is not RUN/TRACK/SPLIT/SYSTEM of a per-query file under {RECORDS}/")
        return self.scores[key]

    def _interval(self, path: str, metric: str) -> tuple[float, float, float]:
        shown = mean_with_interval(self.rows(path), metric, self.resamples)
        if shown is None:
            raise NumberError(f"no query of {path} has {metric!r}")
        return shown

    def _pair(self, pair: str, metric: str):
        """compare's row for ``NEW=OLD`` on ``metric``: the paired delta and its interval."""
        new, sep, old = pair.partition("=")
        if not sep:
            raise NumberError(f"{pair!r} is not NEW=OLD")
        only = {p: {q: {metric: v[metric]} for q, v in self.rows(p).items() if metric in v} for p in (new, old)}
        (row,) = system_pairs({tuple(p.split("/")): rows for p, rows in only.items()}, [(new, old)], self.resamples)
        if row.low is None:
            raise NumberError(f"{pair} {metric}: {row.note or 'no paired interval'}")
        return row

    def metrics_file(self, run: str, key: str) -> Any:
        name, _, rest = key.partition(".")
        path = self.repo / RECORDS / run / "metrics" / f"{name}.json"
        if not path.is_file():
            raise NumberError(f"{path} does not exist")
        return dig(json.loads(path.read_text(encoding="utf-8")), rest.split("."), str(path))

    def machine(self, run: str, stage: str = "") -> str:
        """The label of the machine ``run`` ran on (of its ``stage``, where the record has that stage's own)."""
        machine = record_machine(self.repo / RECORDS / run)
        if machine is None:
            raise NumberError(f"{RECORDS}/{run} has no machine.json: its timings cannot be printed without it")
        return machine_label(stage_machine(machine, stage) if stage else machine)

    def value(self, kind: str, args: list[str]) -> str:
        """The text of one placeholder ``{kind:args...}``."""
        if kind in ("mean", "pm", "mean_pm"):
            path, metric = args
            mean, low, high = self.interval(path, metric)
            shown = {"mean": fmt(metric, mean), "pm": f"±{fmt(metric, (high - low) / 2)}"}
            return shown[kind] if kind in shown else f"{shown['mean']} {shown['pm']}"
        if kind in ("n", "passages"):
            (path,) = args
            rows = self.rows(path)
            return f"{len(rows) if kind == 'n' else len({cluster_of(q) for q in rows}):,}"
        if kind in ("delta", "diff", "interval", "noise"):
            pair, metric = args
            row = self.pair(pair, metric)
            shown = {"diff": signed(metric, row.delta),
                     "interval": f"[{signed(metric, row.low)}, {signed(metric, row.high)}]",
                     "noise": "beyond noise" if row.beyond_noise else "within noise"}
            return shown[kind] if kind in shown else f"{shown['diff']} {shown['interval']}"
        if kind == "percentiles":
            path, field = args
            shown = percentiles(list(self.rows(path).values()), field, field)
            if not shown:
                raise NumberError(f"no query of {path} has {field!r}")
            p50, p95 = shown.values()  # {field}_p50 / _p95, or rerank_p50_s / _p95_s for a field in seconds
            return f"{number(p50)} / {number(p95)}"
        if kind == "value":
            run, key, *unit = args
            if key.endswith("_s"):
                raise NumberError(f"{run}:{key} is a timing: {{time:{run}:{key}:s}}, beside {{machine:{run}}}")
            return number(self.metrics_file(run, key), *unit)
        if kind == "param":
            run, key = args
            path = self.repo / RECORDS / run / "params.yaml"
            return number(dig(read_yaml(path), key.split("."), str(path)))
        if kind == "report":
            run, key = args
            stage, _, rest = key.partition(".")
            path = self.repo / RECORDS / run / REPORTS / f"{stage}.json"
            if not path.is_file():
                raise NumberError(f"{path} does not exist")
            if rest.split(".")[-1] == "seconds" or rest.endswith("_s"):
                raise NumberError(f"{run}:{key} is a timing: quote the stage's time from its machine.json")
            return number(dig(json.loads(path.read_text(encoding="utf-8")), rest.split("."), str(path)))
        if kind == "time":
            run, key, unit = args
            return duration(float(self.metrics_file(run, key)), unit)
        if kind == "machine":
            return self.machine(*args)
        (name,) = args  # brief
        if name not in self.brief:
            raise NumberError(f"no brief quote {name!r} (known: {', '.join(sorted(self.brief))})")
        return self.brief[name]

    def render(self, template: str) -> str:
        """``template`` with every placeholder replaced by its number; a line with a timing must name its machine."""
        for line in template.splitlines():
            given = {self.machine(run, stage) for run, stage in MACHINE.findall(line)}
            for run, file in TIME.findall(line):
                stage = TIMED_BY.get(file, file)
                if self.machine(run, stage) not in given:
                    raise NumberError(f"a timing of {run}'s {stage} without its machine on the same line (add "
                                      f"{{machine:{run}:{stage}}}: {self.machine(run, stage)}): {line[:100]}")

        def replace(match: re.Match) -> str:
            kind, args = match.group(1), match.group(2).split(":")
            try:
                return self.value(kind, args)
            except ValueError as error:  # a wrong number of arguments unpacks as a ValueError too
                raise NumberError(f"{match.group(0)}: {error}") from None

        return PLACEHOLDER.sub(replace, template)
