"""Stage `score_rag`: the RAG system. Per retriever, hit@k and MRR of the gold passage; per system
(retriever+generator), EM, em_any, em_official, F1, cosine, origin score against the passages the generator got
(`origin`) and against the gold passage (`origin_gold`), and ragas' answer relevancy and faithfulness when a judge is set
(`raglab.evaluation.judge`); keyed `split -> system -> metric`, with `routing -> router kind -> accuracy`."""

from pathlib import Path

import click

from raglab.core.errors import run
from raglab.core.formats import read_jsonl, write_jsonl
from raglab.core.report import StageReport
from raglab.evaluation.answers import EXACT_METRICS, CosineColumns, answer_scores
from raglab.evaluation.judge import METRICS as JUDGE_METRICS
from raglab.evaluation.judge import NOTES as JUDGE_NOTES
from raglab.evaluation.judge import judge_scores
from raglab.evaluation.metrics import hit_at, mean_scores, mrr_at, origin_score, percentiles
from raglab.evaluation.stage import score_command
from raglab.params.schema import Params
from raglab.rag.routing import routing_accuracy


def score(params: Params, infer_dir: Path, per_query_dir: Path, report: StageReport, judge_model: str | None) -> dict:
    """hit@k and MRR per retriever; EM, em_any, em_official, F1, cosine, origin and the judged metrics per retriever+generator."""
    p, judge = params.score.rag, params.score.rag.judge
    cosine_embedder = params.score.generation.cosine_embedder  # answers are scored as the generation track's
    metrics = {}
    for split_dir in sorted(d for d in infer_dir.iterdir() if d.is_dir() and (d / "retrieval").is_dir()):
        split, depth = split_dir.name, max(p.hit_at)
        for result_file in sorted((split_dir / "retrieval").glob("*.jsonl")):
            retriever, rows = result_file.stem, read_jsonl(result_file)
            report.add_read(f"{split}/retrieval/{retriever}", len(rows))
            ranks = [next((i for i, h in enumerate(r["ranked"], start=1) if h["passage"] == r["gold_passage"]), None)
                     for r in rows]
            scores = [{**{f"hit@{k}": hit_at(rank, k) for k in p.hit_at}, f"mrr@{depth}": mrr_at(rank, depth)}
                      for rank in ranks]
            metrics.setdefault(split, {})[retriever] = {**{k: round(v, 5) for k, v in mean_scores(scores).items()},
                                                        **percentiles(rows, "rerank_s", "rerank_s")}
            write_jsonl(per_query_dir / split / "retrieval" / f"{retriever}.jsonl",
                        ({"id": r["id"], "question": r["question"], "gold_rank": rank, **s}
                         for r, rank, s in zip(rows, ranks, scores)))
        systems = {f.stem: read_jsonl(f) for f in sorted(split_dir.glob("*.jsonl"))}
        if not systems:
            continue
        columns = CosineColumns(params.score.generation)
        # the judge sees every system's answers at once (a served judge starts once)
        everything = [r for rows in systems.values() for r in rows]
        judged = iter(judge_scores(judge, judge_model, params.serving, cosine_embedder, everything,
                                   per_query_dir / "judge", report))
        for system, rows in systems.items():
            report.add_read(f"{split}/{system}", len(rows))
            per_question = [
                {**q, "origin_gold": origin_score(r["prediction"], r["gold_passage"]), **next(judged)}
                for r, q in zip(rows, answer_scores(columns, rows, ["\n".join(r["passages"]) for r in rows]))]
            means = mean_scores([{k: q[k] for k in (*EXACT_METRICS, *columns.embedders, "origin", "origin_gold")}
                                 for q in per_question])
            for name in JUDGE_METRICS if judge.kind != "none" else ():
                values = [q[name] for q in per_question if q[name] is not None]  # a verdict not given is not a 0
                means[name] = sum(values) / len(values) if values else None
                means[f"{name}_judged"] = len(values) / len(rows)
            metrics.setdefault(split, {})[system] = {k: None if v is None else round(v, 5) for k, v in means.items()}
            report.add_wrote(f"{split}/{system}.jsonl", write_jsonl(per_query_dir / split / f"{system}.jsonl", per_question))
    routes = read_jsonl(infer_dir / "routing.jsonl") if (infer_dir / "routing.jsonl").is_file() else []
    if routes:
        report.add_read("routing", len(routes))
        metrics["routing"] = {params.rag.router.kind: {k: round(v, 5) for k, v in routing_accuracy(
            [r["route"] for r in routes], [r["predicted"] for r in routes]).items()}}
    if judge.kind in JUDGE_NOTES:
        metrics["judge"] = JUDGE_NOTES[judge.kind]
    return metrics


main = score_command("rag", score, 3, click.Option(
    ["--judge-model"], type=click.Path(file_okay=False), default=None,
    help="The model folder a served judge runs (score.rag.judge.kind served)."))

if __name__ == "__main__":
    run(main)
