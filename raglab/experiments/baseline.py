"""The baseline in a terminal: every recorded run (and the pipeline's own scores, where it has run) as rows,
the headline metrics as columns, each mean with its 95% interval and the number of questions behind it.

    python -m raglab.experiments.baseline            # make baseline; --md for Markdown (README, PR comments)
    python -m raglab.experiments.baseline --md --table readme   # README's results table (raglab.experiments.tables)

It reads the committed per-query files (``results/NAME/score/...``, and ``data/score/...`` when present), so a
fresh clone needs nothing pulled. Intervals are percentile bootstraps of the mean, resampling CMRC questions by
passage (``raglab.evaluation.intervals``). ``dvc metrics show results/metrics.json`` prints the same means
without intervals. Below the tables, each record's machine (``results/NAME/machine.json``): its timings are that
machine's.
"""

from __future__ import annotations

import sys
from collections import defaultdict

import click

from raglab.core.machine import machine_label
from raglab.evaluation.intervals import cluster_of
from raglab.experiments.compare import (Scores, fmt, is_percent, mean_with_interval, per_query_scores,
                                       workspace_reader)
from raglab.experiments.numbers import NumberError
from raglab.experiments.tables import records_of, render_block
from raglab.experiments.records import RECORDS, record_machine, stage_machine

# the columns each track shows, in order, when its per-query files hold them
COLUMNS = {
    "retrieval": ("context_recall", "context_relevance", "context_relevance_sentences", "hit@1", "hit@5", "mrr@10"),
    "generation": ("em", "em_any", "em_official", "f1", "cosine", "cosine_minilm", "origin"),
    "rag retrieval": ("hit@1", "hit@3", "hit@5", "mrr@10"),
    "rag": ("em", "em_any", "em_official", "f1", "cosine", "cosine_minilm", "origin", "faithfulness"),
    "math": ("accuracy", "accuracy_lenient"),
}


def cell(metric: str, rows: dict[str, dict[str, float]], resamples: int) -> str:
    shown = mean_with_interval(rows, metric, resamples)
    if shown is None:
        return ""
    mean, low, high = shown
    return f"{fmt(metric, mean)} ±{fmt(metric, (high - low) / 2)}"


def tables(scores: Scores, resamples: int = 2000) -> dict[str, tuple[list[str], list[list[str]]]]:
    """Per track (in ``COLUMNS`` order): the header and one row per (run, split, system)."""
    by_track: dict[str, list] = defaultdict(list)
    for (run, track, split, system), rows in sorted(scores.items()):
        by_track[track].append((run, split, system, rows))
    out = {}
    for track in sorted(by_track, key=lambda t: list(COLUMNS).index(t) if t in COLUMNS else len(COLUMNS)):
        entries = by_track[track]
        present = {m for *_, rows in entries for q in rows.values() for m in q}
        columns = [m for m in COLUMNS.get(track, ()) if m in present]
        clustered = any(cluster_of(q) != q for *_, rows in entries for q in rows)
        header = ["run", "split", "system", "n" + (" (passages)" if clustered else ""), *columns]
        out[track] = (header, [[run, split, system, f"{len(rows)}" + (f" ({len({cluster_of(q) for q in rows})})"
                                                                         if clustered else ""),
                                *(cell(m, rows, resamples) for m in columns)] for run, split, system, rows in entries])
    return out


def render(track_tables: dict[str, tuple[list[str], list[list[str]]]], markdown: bool) -> str:
    lines = []
    for track, (header, rows) in track_tables.items():
        units = ", ".join(m for m in header[4:] if is_percent(m))
        how = "questions resampled by passage" if header[3] != "n" else "questions resampled"
        lines.append(f"## {track}" if markdown else f"{track}")
        lines.append(f"(mean ±half its 95% bootstrap interval, {how}; {units} in %)\n")
        if markdown:
            lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(r) + " |" for r in rows]
        else:
            widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
            lines += ["  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                      for r in [header, *rows]]
        lines.append("")
    return "\n".join(lines)


def machine_lines(repo: str, runs: list[str]) -> list[tuple[str, str]]:
    """``(run, machine)`` for each recorded run with a ``machine.json``: its label, then the label of each stage
    that ran elsewhere (another session's run, e.g. training restored from DVC's run-cache)."""
    lines = []
    for run in runs:
        machine = record_machine(f"{repo}/{RECORDS}/{run}")
        if machine is None:
            continue
        elsewhere: dict[str, list[str]] = {}  # label: the stages of other runs on such a machine
        for stage in machine.get("stages") or {}:
            if (own := stage_machine(machine, stage)) is not machine:
                elsewhere.setdefault(machine_label(own), []).append(stage)
        lines.append((run, "; ".join([machine_label(machine),
                                      *(f"{', '.join(stages)} in another run: {label}"
                                        for label, stages in elsewhere.items())])))
    return lines


def render_machines(lines: list[tuple[str, str]], markdown: bool) -> str:
    if not lines:
        return ""
    head = "machines (results/NAME/machine.json: a record's timings are of its machine)"
    if markdown:
        return "\n".join(["", f"## {head}", "", *(f"- {run}: {machine}" for run, machine in lines), ""]) + "\n"
    width = max(len(run) for run, _ in lines)
    return "\n".join(["", head, *(f"{run.ljust(width)}  {machine}" for run, machine in lines), ""]) + "\n"


@click.command()
@click.option("--md", "markdown", is_flag=True, help="Markdown tables instead of aligned text.")
@click.option("--repo", default=".", show_default=True)
@click.option("--resamples", default=2000, show_default=True)
@click.option("--table", metavar="BLOCK", help="Instead: one generated table of docs/tables.yaml as README or docs/ "
              "hold it (with --md; 'readme': README's results table).")
def main(markdown: bool, repo: str, resamples: int, table: str | None) -> None:
    """Print the baseline: recorded runs as rows, headline metrics with n and 95% intervals as columns."""
    if table:
        if not markdown:
            raise click.UsageError("--table prints Markdown: add --md")
        try:
            sys.stdout.write(render_block(table, repo, records_of(repo, resamples)))
        except NumberError as error:
            raise click.ClickException(str(error)) from None
        return
    scores = per_query_scores(*workspace_reader(repo))
    if not scores:
        raise click.ClickException(f"no per-query scores under {repo}/results/*/score or {repo}/data/score")
    sys.stdout.write(render(tables(scores, resamples), markdown))
    sys.stdout.write(render_machines(machine_lines(repo, sorted({run for run, *_ in scores})), markdown))


if __name__ == "__main__":
    main()
