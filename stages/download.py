"""Stage `download`: fetch the datasets (hub at a pinned revision, or a local mirror) into data/raw."""

from pathlib import Path

import click

from raglab.formats import write_jsonl
from raglab.params import load_params, section
from raglab.report import StageReport
from raglab.sources import load_split


@click.command()
@click.option("--params", "params_file", default="params.yaml", show_default=True)
@click.option("--out", "out_dir", default="data/raw", show_default=True, type=click.Path(file_okay=False))
def main(params_file: str, out_dir: str) -> None:
    p = section(load_params(params_file), "download", params_file)
    out = Path(out_dir)
    with StageReport("download", out / "report.json") as report:
        sources = {}
        for name, spec in p["datasets"].items():
            for split in spec["splits"]:
                data = load_split(name, spec, split, p.get("mirror"), p.get("limit"))
                report.add_read(f"{name}/{split}", len(data.rows))
                report.add_wrote(f"{name}/{split}", write_jsonl(out / name / f"{split}.jsonl", data.rows))
                sources[f"{name}/{split}"] = {"source": data.source, "sha256": data.sha256, "rows": len(data.rows)}
        report.extra["sources"] = sources


if __name__ == "__main__":
    main()
