"""Time the LLM reranker on the local LLM: N queries, BM25's top K passages each, scored in batches.

Reads question/context pairs (a build_embed_negatives split folder with eval.jsonl and kb.txt, or a CSV with
``question`` and ``context`` columns such as the mirror's Financial-QA-10k.csv), ranks the knowledge base with
BM25, reorders each query's top K with the LLM (``rerank.llm`` of params.yaml, the kind, batch size and precision
given here) and prints the seconds per query (p50 / p95, the first query's model warm-up left out), hit@1 before
and after, and the machine the times were taken on (CPU model, cores, bf16 flags, torch threads).

    python benchmarks/llm_rerank.py --llm models/base/llm --eval data/embed/test --queries 60 --candidates 10
    python benchmarks/llm_rerank.py --llm $TINY_LLM_DIR --eval data/demo-mirror/financial-qa-10k/Financial-QA-10k.csv
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

import click

from raglab.core.formats import read_jsonl, read_lines
from raglab.core.machine import describe_machine, machine_label
from raglab.evaluation.metrics import percentiles
from raglab.params.loader import load_params
from raglab.retriever.llm_rerank import LLMReranker, LocalLLM
from raglab.retriever.search import BM25Index


def pairs(source: Path) -> tuple[list[str], list[str], list[str]]:
    """Questions, their gold passages and the knowledge base (a CSV's rows without both left out)."""
    if source.is_dir():
        rows = read_jsonl(source / "eval.jsonl")
        return [r["query"] for r in rows], [r["corpus"][0] for r in rows], read_lines(source / "kb.txt")
    with open(source, encoding="utf-8", newline="") as f:
        rows = [r for r in csv.DictReader(f) if (r.get("question") or "").strip() and (r.get("context") or "").strip()]
    kb = list(dict.fromkeys(r["context"] for r in rows))
    return [r["question"] for r in rows], [r["context"] for r in rows], kb


@click.command()
@click.option("--llm", "llm_dir", required=True, type=click.Path(file_okay=False, exists=True),
              help="The LLM folder (download@llm's models/base/llm).")
@click.option("--adapter", default=None, type=click.Path(file_okay=False, exists=True),
              help="A LoRA adapter to merge (train_llm's models/llm-adapter).")
@click.option("--eval", "source", required=True, type=click.Path(exists=True),
              help="A folder with eval.jsonl and kb.txt, or a CSV with question and context columns.")
@click.option("--kind", type=click.Choice(["query_likelihood", "yes_no"]), default="query_likelihood",
              show_default=True)
@click.option("--queries", default=10, show_default=True, help="Queries timed (the first N).")
@click.option("--candidates", default=10, show_default=True, help="BM25's top K reordered per query.")
@click.option("--batch-size", default=8, show_default=True, help="Pairs per forward pass.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto", show_default=True)
@click.option("--params", "params_file", default="params.yaml", show_default=True)
def main(llm_dir: str, adapter: str | None, source: str, kind: str, queries: int, candidates: int, batch_size: int,
         precision: str, params_file: str) -> None:
    import torch

    params = load_params(params_file)
    questions, golds, kb = pairs(Path(source))
    questions, golds = questions[:queries], golds[:queries]
    scorer = LocalLLM.load(llm_dir, adapter, params.rerank.llm, precision, params.llm.trust_remote_code)
    scorer.batch_size = batch_size
    reranker = LLMReranker(kind, params.rerank.llm, scorer)
    first = BM25Index(kb).search(questions, candidates)
    rows, hits_before, hits_after = [], 0, 0
    for question, gold, ranking in zip(questions, golds, first):
        started = time.perf_counter()
        reordered = reranker.rerank(question, ranking, kb, candidates, params.rerank)
        rows.append({"s": time.perf_counter() - started})
        hits_before += bool(ranking) and kb[ranking[0][0]] == gold
        hits_after += bool(reordered) and kb[reordered[0][0]] == gold
    timed = rows[1:] or rows  # the first query also warms the model up
    print(f"{machine_label(describe_machine())}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{kind} on {llm_dir}{f' + {adapter}' if adapter else ''}: {scorer.precision}, batch {batch_size}, "
          f"{len(questions)} queries x BM25's top {candidates} of {len(kb)} passages")
    p50, p95 = percentiles(timed, "s", "query_s").values()
    print(f"seconds per query: p50 {p50:.3f}, p95 {p95:.3f} (over {len(timed)} queries)")
    print(f"hit@1: BM25 {100 * hits_before / len(questions):.1f}, reranked {100 * hits_after / len(questions):.1f}")


if __name__ == "__main__":
    main()
