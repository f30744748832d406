"""What the four score stages share: their command line, the metrics file, the bar-plot CSV and the report.

Each ``stages/score_<track>.py`` defines its scorer ``(params, infer_dir, per_query_dir, report) -> metrics``
and builds its command with ``score_command``; metrics are nested dicts ``... -> system -> metric``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from raglab.core.formats import write_csv, write_json
from raglab.core.report import StageReport
from raglab.params.loader import load_params

Scorer = Callable[..., dict]


def plot_rows(metrics: dict, depth: int) -> list[dict]:
    """Flatten {..., system: {metric: value}} into bar-plot rows labelled by their path (numbers only)."""
    if depth == 0:
        return [{"label": "", "value": metrics}] if isinstance(metrics, (int, float)) else []
    if not isinstance(metrics, dict):
        return []
    return [{"label": f"{key} {row['label']}".strip(), "value": row["value"]}
            for key, sub in metrics.items() for row in plot_rows(sub, depth - 1)]


def score_command(track: str, scorer: Scorer, depth: int, *extra: click.Option) -> click.Command:
    """The click command of ``score_<track>``: read the params, score serve_infer's outputs, write the metrics
    (``--metrics``), the bar plot (``--plot``, metrics ``depth`` levels deep) and the per-query files."""

    def main(params_file: str, infer_dir: str, metrics_file: str, plot_file: str, per_query_dir: str,
             **options) -> None:
        params = load_params(params_file)
        with StageReport(f"score_{track}", Path(per_query_dir) / "report.json") as report:
            metrics = scorer(params, Path(infer_dir), Path(per_query_dir), report, **options)
            write_json(metrics_file, metrics)
            write_csv(plot_file, plot_rows(metrics, depth))
            report.extra["metrics"] = metrics

    params = [
        click.Option(["--params", "params_file"], default="params.yaml", show_default=True),
        click.Option(["--infer", "infer_dir"], required=True, type=click.Path(file_okay=False, exists=True),
                     help=f"serve_infer_{track}'s output folder."),
        click.Option(["--metrics", "metrics_file"], required=True, type=click.Path(dir_okay=False),
                     help="Metrics JSON to write."),
        click.Option(["--plot", "plot_file"], required=True, type=click.Path(dir_okay=False),
                     help="Bar-plot CSV to write."),
        click.Option(["--per-query", "per_query_dir"], required=True, type=click.Path(file_okay=False),
                     help="Folder for the per-query results (error analysis)."),
        *extra,
    ]
    return click.Command(f"score_{track}", callback=main, params=params,
                         help=f"Score serve_infer_{track}'s outputs: {scorer.__doc__.strip().splitlines()[0]}")
