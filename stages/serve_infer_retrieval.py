"""Stage `serve_infer_retrieval`: each embedder system (`base` = the untuned model, `tuned` = train_embed's
output) encodes the knowledge base and the queries of each eval split; faiss returns the top-k passages."""

from pathlib import Path

import click

from raglab.core.errors import run
from raglab.core.formats import read_jsonl, read_lines, write_jsonl
from raglab.core.report import StageReport
from raglab.params.loader import load_params
from raglab.params.schema import Params
from raglab.retriever.search import EmbedderConfig, load_embedder, retrieve


def eval_splits(embed_dir: Path) -> list[str]:
    return sorted(p.name for p in embed_dir.iterdir() if (p / "eval.jsonl").is_file() and (p / "kb.txt").is_file())


def run_retrieval(params: Params, embed_dir: Path, tuned_embedder: str, out: Path, report: StageReport) -> None:
    top_k = params.serve_infer.retrieval.top_k
    systems = {"base": EmbedderConfig.of(params.embedder),
               "tuned": EmbedderConfig.of(params.embedder, model=tuned_embedder, revision=None)}
    data = {s: (read_jsonl(embed_dir / s / "eval.jsonl"), read_lines(embed_dir / s / "kb.txt")) for s in eval_splits(embed_dir)}
    if not data:
        raise click.ClickException(f"{embed_dir} holds no eval split (a folder with eval.jsonl and kb.txt)")
    for split, (rows, kb) in data.items():
        report.add_read(f"{split}/eval.jsonl", len(rows))
        report.add_read(f"{split}/kb.txt", len(kb))
    for system, cfg in systems.items():
        embedder = load_embedder(cfg)
        for split, (rows, kb) in data.items():
            hits = retrieve(embedder, [r["query"] for r in rows], kb, top_k)
            results = [{"query": r["query"], "gold": r["corpus"][0], "retrieved": h} for r, h in zip(rows, hits)]
            name = f"{split}/{system}.jsonl"
            report.add_wrote(name, write_jsonl(out / name, results))


@click.command()
@click.option("--params", "params_file", default="params.yaml", show_default=True)
@click.option("--eval", "eval_dir", required=True, type=click.Path(file_okay=False, exists=True),
              help="build_embed_negatives' output (a folder per eval split).")
@click.option("--model", "model_dir", required=True, type=click.Path(file_okay=False, exists=True),
              help="The tuned embedder (train_embed).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))
def main(params_file: str, eval_dir: str, model_dir: str, out_dir: str) -> None:
    """Rank each eval split's knowledge base for its queries with the untuned and the tuned embedder."""
    out = Path(out_dir)
    with StageReport("serve_infer_retrieval", out / "report.json") as report:
        run_retrieval(load_params(params_file), Path(eval_dir), model_dir, out, report)


if __name__ == "__main__":
    run(main)
