"""Stage `download@data`: fetch the datasets (hub at a pinned revision, or a local mirror) into data/raw."""

from pathlib import Path

import click

from raglab.core.errors import run
from raglab.core.formats import write_jsonl
from raglab.core.report import StageReport
from raglab.data.sources import load_split
from raglab.params.loader import load_params
from raglab.params.pipeline import Download


def download_data(p: Download, out: Path, report: StageReport) -> None:
    sources = {}
    for name, spec in p.datasets.items():
        for split in spec.splits:
            data = load_split(name, spec, split, p.mirror, p.limit)
            report.add_read(f"{name}/{split}", len(data.rows))
            report.add_wrote(f"{name}/{split}", write_jsonl(out / name / f"{split}.jsonl", data.rows))
            sources[f"{name}/{split}"] = {"source": data.source, "sha256": data.sha256, "rows": len(data.rows)}
    report.extra["sources"] = sources


@click.command()
@click.option("--params", "params_file", default="params.yaml", show_default=True)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))
def main(params_file: str, out_dir: str) -> None:
    """Fetch the datasets of params `download` into --out."""
    out = Path(out_dir)
    with StageReport("download@data", out / "report.json") as report:
        download_data(load_params(params_file).download, out, report)


if __name__ == "__main__":
    run(main)
