"""Compare two revisions metric by metric, with a confidence interval on every delta.

``dvc metrics diff`` says how much a number moved, not whether that is more than noise: on 700
queries a 0.3-point change in context recall is one or two queries. This module reads the per-query
scores at two git revisions: the pipeline's (``data/score/...``, DVC outputs, read through DVC: the local
cache, or the DVC remote for a revision whose outputs are only there) and those of every recorded run
(``results/NAME/score/...``, committed with the run's params, dvc.lock and metrics). It pairs the
queries and for each (run, track, split, system, metric) reports old, new, the signed delta and a 95%
paired-bootstrap interval of the delta; a delta whose interval excludes zero is marked as beyond the noise.
Questions are resampled by passage (a cluster bootstrap, ``raglab.evaluation.intervals``): questions on one
passage are not independent, and the i.i.d. interval would be too narrow.

    python -m raglab.experiments.compare --base main --head HEAD > metrics-diff.md

The report opens with ``dvc params diff`` and closes with ``dvc metrics diff`` of the same revisions; the
pull-request workflow (``.github/workflows/pull-request.yml``) posts it as the job summary and a comment.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import click
import numpy as np

from raglab.evaluation.intervals import cluster_of, mean_interval, paired_bootstrap, passage_key
from raglab.experiments.dvc import run_dvc
from raglab.experiments.records import RECORDS, SCORES

HEADLINE = ("em", "em_any", "em_official", "f1", "cosine", "origin", "context_recall", "context_relevance")
PERCENT_PREFIXES = ("em", "f1", "cosine", "origin", "context_", "hit@", "accuracy", "share_")


def is_percent(metric: str) -> bool:
    """Shown in percent: shares and means of 0/1 or [0, 1] scores (not losses, MRR or nDCG)."""
    return metric.startswith(PERCENT_PREFIXES)


@dataclass
class Row:
    run: str
    track: str
    split: str
    system: str
    metric: str
    old: float | None
    new: float | None
    low: float | None = None   # 95% interval of new - old
    high: float | None = None
    n: int = 0
    note: str = ""

    @property
    def delta(self) -> float | None:
        return None if self.old is None or self.new is None else self.new - self.old

    @property
    def beyond_noise(self) -> bool:
        return self.low is not None and (self.low > 0 or self.high < 0)


# --- per-query scores of one revision: {(run, track, split, system): {query key: {metric: value}}} ---

Scores = dict[tuple[str, str, str, str], dict[str, dict[str, float]]]
PIPELINE = SCORES  # the pipeline's own per-query scores; recorded runs' are in RECORDS/NAME/score/...


def _jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def per_query_scores(read: Callable[[str], str | None], listdir: Callable[[str], list[str]]) -> Scores:
    """The per-query files of one revision (the pipeline's and every record's), through ``read(path)`` and
    ``listdir(path)``."""
    scores: Scores = {}
    roots = {"pipeline": PIPELINE, **{name: f"{RECORDS}/{name}/score" for name in listdir(RECORDS)}}
    for run, root in roots.items():
        for key, rows in scores_under(root, read, listdir).items():
            scores[(run, *key)] = rows
    return scores


def scores_under(root: str, read: Callable[[str], str | None], listdir: Callable[[str], list[str]]
                 ) -> dict[tuple[str, str, str], dict[str, dict[str, float]]]:
    """{(track, split, system): {query key: {metric: value}}} of the score folders under ``root``."""
    scores: dict[tuple[str, str, str], dict[str, dict[str, float]]] = {}
    for name in listdir(f"{root}/retrieval"):
        if name.endswith(".jsonl"):
            split = name.removesuffix(".jsonl")
            for i, row in enumerate(_jsonl(read(f"{root}/retrieval/{name}") or "")):
                for system, values in row.items():
                    if isinstance(values, dict):
                        key = passage_key(str(row.get("gold", row["query"])), i)
                        scores.setdefault(("retrieval", split, system), {})[key] = {
                            k: v for k, v in values.items() if isinstance(v, (int, float))}
    for split in listdir(f"{root}/generation"):
        for name in listdir(f"{root}/generation/{split}"):
            if name.endswith(".jsonl"):
                for row in _jsonl(read(f"{root}/generation/{split}/{name}") or ""):
                    scores.setdefault(("generation", split, name.removesuffix(".jsonl")), {})[str(row["id"])] = {
                        k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    for split in listdir(f"{root}/rag"):  # the RAG system: each retriever's ranks, each retriever+generator's answers
        for folder, track in ((f"{root}/rag/{split}/retrieval", "rag retrieval"), (f"{root}/rag/{split}", "rag")):
            for name in listdir(folder):
                if name.endswith(".jsonl"):
                    for row in _jsonl(read(f"{folder}/{name}") or ""):
                        scores.setdefault((track, split, name.removesuffix(".jsonl")), {})[str(row["id"])] = {
                            k: v for k, v in row.items()
                            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "gold_rank"}
    for name in listdir(f"{root}/math"):
        if name.endswith(".jsonl"):
            for i, row in enumerate(_jsonl(read(f"{root}/math/{name}") or "")):
                scores.setdefault(("math", "eval", name.removesuffix(".jsonl")), {})[f"{i}|{row['question']}"] = {
                    k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return scores


def _mean(rows: Iterable[dict[str, float]], metric: str) -> float | None:
    values = [q[metric] for q in rows if metric in q]
    return float(np.mean(values)) if values else None


def mean_with_interval(rows: dict[str, dict[str, float]], metric: str, n_resamples: int = 2000
                       ) -> tuple[float, float, float] | None:
    """The mean of ``metric`` over the queries that have it and the 95% bootstrap interval of that mean (CMRC
    questions resampled by passage): ``(mean, low, high)``, None when no query has it."""
    keys = [q for q, values in rows.items() if metric in values]
    if not keys:
        return None
    values = [rows[q][metric] for q in keys]
    low, high = mean_interval(values, [cluster_of(q) for q in keys], n_resamples)
    return sum(values) / len(values), low, high


def compare(old: Scores, new: Scores, n_resamples: int = 2000) -> list[Row]:
    rows = []
    for key in sorted(set(old) | set(new)):
        run, track, split, system = key
        a, b = old.get(key, {}), new.get(key, {})
        metrics = sorted({m for q in (*a.values(), *b.values()) for m in q})
        common = [q for q in a if q in b]
        for metric in metrics:
            mean_a, mean_b = _mean(a.values(), metric), _mean(b.values(), metric)
            row = Row(run, track, split, system, metric, mean_a, mean_b, n=len(common))
            if a and b and len(common) == len(a) == len(b) and all(metric in a[q] and metric in b[q] for q in common):
                row.low, row.high = paired_bootstrap([a[q][metric] for q in common], [b[q][metric] for q in common],
                                                     [cluster_of(q) for q in common], n_resamples)
            elif a and b and len(common) == len(a) == len(b):
                row.note = "only in " + ("head" if all(metric in b[q] for q in common) else "base")
            elif a and b:
                row.note = f"not paired: {len(common)} of {len(a)} / {len(b)} queries in common"
            else:
                row.note = "only in " + ("head" if b else "base")
            rows.append(row)
    headline = {m: i for i, m in enumerate(HEADLINE)}
    return sorted(rows, key=lambda r: (r.metric not in headline, headline.get(r.metric, 0), r.metric, r.run,
                                       r.track, r.split, r.system))


def fmt(metric: str, value: float | None, signed: bool = False) -> str:
    if value is None:
        return "–"
    scale = 100 if is_percent(metric) else 1
    digits = 2 if scale == 100 else 3
    return f"{value * scale:+.{digits}f}" if signed else f"{value * scale:.{digits}f}"


def markdown(rows: Iterable[Row], base: str, head: str) -> str:
    rows = list(rows)
    same = [r for r in rows if r.low == r.high == 0 and r.old == r.new]  # identical per-query scores
    rows = [r for r in rows if r not in same]
    lines = [f"## Metrics: `{head}` vs `{base}`", "",
             "Percentages for EM, cosine, origin, context recall / relevance, hit@k and accuracy. The interval is a 95% "
             "paired bootstrap over the per-query scores, resampling CMRC questions by passage (cluster bootstrap); "
             "**bold** deltas are beyond it (the interval excludes 0), the others are within noise.", "",
             "| metric | run | track | split | system | base | head | Δ | 95% interval of Δ | n |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        delta = fmt(r.metric, r.delta, signed=True)
        if r.beyond_noise:
            delta = f"**{delta}**"
        interval = (f"[{fmt(r.metric, r.low, True)}, {fmt(r.metric, r.high, True)}]" if r.low is not None
                    else r.note or "–")
        lines.append(f"| {r.metric} | {r.run} | {r.track} | {r.split} | {r.system} | {fmt(r.metric, r.old)} | "
                     f"{fmt(r.metric, r.new)} | {delta} | {interval} | {r.n} |")
    changed = sum(r.beyond_noise for r in rows)
    lines += ["", f"{changed} of {len(rows)} deltas are beyond the noise; {len(same)} metrics with identical "
              "per-query scores in both revisions are not listed."]
    return "\n".join(lines) + "\n"


def workspace_reader(root: str = "."):
    """``read`` and ``listdir`` over the files on disk (what ``revision_reader`` gives for a revision)."""
    def read(path: str) -> str | None:
        full = os.path.join(root, path)
        return open(full, encoding="utf-8").read() if os.path.isfile(full) else None

    def listdir(path: str) -> list[str]:
        full = os.path.join(root, path)
        return sorted(os.listdir(full)) if os.path.isdir(full) else []

    return read, listdir


def revision_reader(rev: str | None, repo: str = ".") -> tuple[Callable[[str], str | None], Callable[[str], list[str]]]:
    """``read`` and ``listdir`` for the files of revision ``rev`` (None: the workspace) as DVC sees them:
    git-tracked files, and DVC outputs from the local cache, or the DVC remote when they are only there."""
    from dvc.api import DVCFileSystem

    fs = DVCFileSystem(repo, rev=rev)

    def read(path: str) -> str | None:
        if not fs.isfile(path):
            return None
        try:
            return fs.read_text(path, encoding="utf-8")
        except FileNotFoundError:  # a DVC output of that revision in neither the cache nor the remote
            click.echo(f"warning: {path} at {rev or 'the workspace'} is in no DVC cache or remote: "
                       "its rows show as only in the other revision (dvc pull / dvc fetch it)", err=True)
            return None

    def listdir(path: str) -> list[str]:
        return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)) if fs.isdir(path) else []

    return read, listdir


def dvc_diff(kind: str, base: str, head: str | None, repo: str) -> str:
    """``dvc params diff`` / ``dvc metrics diff`` of the two revisions as Markdown (head None: the workspace)."""
    table = run_dvc(kind, "diff", "--md", base, *([head] if head else []), cwd=repo).strip()
    return table if len(table.splitlines()) > 2 else ""  # a header without rows: nothing changed


def report(base: str, head: str, repo: str = ".", resamples: int = 2000) -> str:
    """The pull-request comment: parameters changed, every per-query metric's delta with its interval (headline
    metrics first), then ``dvc metrics diff`` of everything (training loss, run times...)."""
    head_rev = None if head == "workspace" else head
    old = per_query_scores(*revision_reader(base, repo))
    new = per_query_scores(*revision_reader(head_rev, repo))
    if not old and not new:
        raise click.ClickException(f"no per-query scores ({PIPELINE}/... or {RECORDS}/*/score/...) at {base} or "
                                   f"{head}: dvc pull them, or run the pipeline")
    params = dvc_diff("params", base, head_rev, repo) or "No parameter changed."
    metrics = dvc_diff("metrics", base, head_rev, repo) or "No metrics file changed."
    return (f"## Parameters: `{head}` vs `{base}`\n\n{params}\n\n" + markdown(compare(old, new, resamples), base, head)
            + f"\n<details><summary>dvc metrics diff (every metrics file)</summary>\n\n{metrics}\n\n</details>\n")


def system_pairs(scores: Scores, pairs: Iterable[tuple[str, str]], resamples: int = 2000) -> list[Row]:
    """Two systems of one revision on the same questions (``RUN/TRACK/SPLIT/SYSTEM`` each, e.g. a record's CoT
    student against its untuned model, or against another record's answers-only student): each metric's
    delta (new - old) with its paired interval, as ``compare`` gives it for two revisions."""
    old: Scores = {}
    new: Scores = {}
    for new_key, old_key in pairs:
        keys = [tuple(k.split("/")) for k in (new_key, old_key)]
        for key, text in zip(keys, (new_key, old_key)):
            if len(key) != 4 or key not in scores:
                known = ", ".join("/".join(k) for k in sorted(scores))
                raise click.BadParameter(f"{text!r} is not RUN/TRACK/SPLIT/SYSTEM of a per-query file here "
                                         f"(known: {known})", param_hint="--pair")
        label = (keys[0][0], keys[0][1], keys[0][2], f"{keys[0][3]} − {'/'.join(keys[1][k] for k in (0, 3))}")
        new[label], old[label] = scores[keys[0]], scores[keys[1]]
    return compare(old, new, resamples)


@click.command()
@click.option("--base", default="main", show_default=True, help="The revision compared against.")
@click.option("--head", default="HEAD", show_default=True, help="The revision under review ('workspace': files on disk).")
@click.option("--repo", default=".", show_default=True)
@click.option("--resamples", default=2000, show_default=True)
@click.option("--pair", "pairs", multiple=True, metavar="NEW=OLD",
              help="Instead: two systems of --head on the same questions, each RUN/TRACK/SPLIT/SYSTEM, e.g. "
                   "real-cpu-math-cot/math/eval/sft=real-cpu-math-cot/math/eval/base.")
def main(base: str, head: str, repo: str, resamples: int, pairs: tuple[str, ...]) -> None:
    """Print the Markdown report of two revisions: params diff, metric deltas with 95% intervals, metrics diff;
    or, with --pair, the deltas between systems of one revision."""
    if not pairs:
        sys.stdout.write(report(base, head, repo, resamples))
        return
    split_pairs = [tuple(p.split("=", 1)) for p in pairs]
    if any(len(p) != 2 for p in split_pairs):
        raise click.BadParameter("each --pair is NEW=OLD", param_hint="--pair")
    scores = per_query_scores(*revision_reader(None if head == "workspace" else head, repo))
    sys.stdout.write(markdown(system_pairs(scores, split_pairs, resamples), "OLD", "NEW"))


if __name__ == "__main__":
    main()
