"""Stage `score_retrieval`: context recall (ragas, non-LLM), context relevance, hit@k, MRR@k and nDCG@k of
each retriever over each eval split, and the p50 / p95 seconds of a reranked retriever's reranking per query;
metrics keyed `split -> system -> metric`."""

from pathlib import Path

from tqdm import tqdm

from raglab.core.errors import run
from raglab.core.formats import read_jsonl, write_jsonl
from raglab.core.report import StageReport
from raglab.evaluation.metrics import mean_scores, percentiles, retrieval_scores
from raglab.evaluation.stage import score_command
from raglab.params.schema import Params


def score(params: Params, infer_dir: Path, per_query_dir: Path, report: StageReport) -> dict:
    """context recall and relevance, hit@k, MRR and nDCG per embedder and split."""
    p = params.score.retrieval
    kwargs = dict(context_top_n=p.context_top_n, hit_ks=p.hit_at, rank_k=p.rank_at,
                  threshold=p.similarity_threshold, separator=p.sentence_separator)
    metrics = {}
    for split_dir in sorted(d for d in infer_dir.iterdir() if d.is_dir()):
        split, per_query = split_dir.name, {}
        for result_file in sorted(split_dir.glob("*.jsonl")):
            system, rows = result_file.stem, read_jsonl(result_file)
            report.add_read(f"{split}/{system}", len(rows))
            scores = [retrieval_scores([h["text"] for h in r["retrieved"]], r["gold"], **kwargs)
                      for r in tqdm(rows, desc=f"score {split}/{system}", leave=False)]
            metrics.setdefault(split, {})[system] = {**{k: round(v, 5) for k, v in mean_scores(scores).items()},
                                                     **percentiles(rows, "rerank_s", "rerank_s")}
            for i, (r, s) in enumerate(zip(rows, scores)):
                entry = per_query.setdefault(i, {"query": r["query"], "gold": r["gold"]})
                entry[system] = {"top1": r["retrieved"][0]["text"] if r["retrieved"] else None, **s}
        report.add_wrote(f"{split}.jsonl", write_jsonl(per_query_dir / f"{split}.jsonl", per_query.values()))
    return metrics


main = score_command("retrieval", score, depth=3)

if __name__ == "__main__":
    run(main)
