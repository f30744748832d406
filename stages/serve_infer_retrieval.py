"""Stage `serve_infer_retrieval`: each retriever of `serve_infer.retrieval.systems` (`base` = the untuned
embedder, `tuned` = train_embed's output, bm25, hybrid, each optionally reranked: `tuned+rerank` reorders the
tuned embedder's `rerank.candidates` best with train_rerank's cross-encoder) ranks each eval split's knowledge
base for its queries; a reranked row records the time its reranking took."""

from pathlib import Path

import click

from raglab.core.errors import run
from raglab.core.formats import read_jsonl, read_lines, write_jsonl
from raglab.core.report import StageReport
from raglab.params.loader import load_params
from raglab.params.schema import Params
from raglab.retriever.systems import Retrievers


def eval_splits(embed_dir: Path) -> list[str]:
    return sorted(p.name for p in embed_dir.iterdir() if (p / "eval.jsonl").is_file() and (p / "kb.txt").is_file())


def run_retrieval(params: Params, embed_dir: Path, tuned_embedder: str | None, tuned_reranker: str | None,
                  out: Path, report: StageReport) -> None:
    top_k = params.serve_infer.retrieval.top_k
    data = {s: (read_jsonl(embed_dir / s / "eval.jsonl"), read_lines(embed_dir / s / "kb.txt")) for s in eval_splits(embed_dir)}
    if not data:
        raise click.ClickException(f"{embed_dir} holds no eval split (a folder with eval.jsonl and kb.txt)")
    shared = None
    for split, (rows, kb) in data.items():
        report.add_read(f"{split}/eval.jsonl", len(rows))
        report.add_read(f"{split}/kb.txt", len(kb))
        shared = retrievers = Retrievers(kb, params, tuned_embedder, tuned_reranker, shared=shared)
        missing = [s for s in params.serve_infer.retrieval.systems if s not in retrievers.available()]
        if missing:
            raise click.UsageError(f"serve_infer.retrieval.systems {missing}: not servable here (tuned needs --model, "
                                   f"+rerank --reranker); available: {', '.join(retrievers.available())}")
        queries = [r["query"] for r in rows]
        for system in params.serve_infer.retrieval.systems:
            rankings = retrievers.search(system, queries, top_k)
            results = [{"query": r["query"], "gold": r["corpus"][0],
                        "retrieved": [{"text": kb[j], "score": round(s, 6)} for j, s in ranking]}
                       for r, ranking in zip(rows, rankings)]
            for result, s in zip(results, retrievers.rerank_seconds(system, len(rows))):
                result["rerank_s"] = round(s, 5)  # the time the query's reranking took
            name = f"{split}/{system}.jsonl"
            report.add_wrote(name, write_jsonl(out / name, results))


@click.command()
@click.option("--params", "params_file", default="params.yaml", show_default=True)
@click.option("--eval", "eval_dir", required=True, type=click.Path(file_okay=False, exists=True),
              help="build_embed_negatives' output (a folder per eval split).")
@click.option("--model", "model_dir", default=None, type=click.Path(file_okay=False, exists=True),
              help="The tuned embedder (train_embed); needed by the systems named tuned.")
@click.option("--reranker", "reranker_dir", default=None, type=click.Path(file_okay=False, exists=True),
              help="The tuned cross-encoder (train_rerank); needed by the systems +rerank.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))
def main(params_file: str, eval_dir: str, model_dir: str | None, reranker_dir: str | None, out_dir: str) -> None:
    """Rank each eval split's knowledge base for its queries with every retriever of serve_infer.retrieval."""
    out = Path(out_dir)
    with StageReport("serve_infer_retrieval", out / "report.json") as report:
        run_retrieval(load_params(params_file), Path(eval_dir), model_dir, reranker_dir, out, report)


if __name__ == "__main__":
    run(main)
