"""Stage `score_generation`: exact match, cosine (the embedding model of the params) and origin score of each
LLM system over each eval split; metrics keyed `split -> system -> metric`."""

from pathlib import Path

from raglab.core.errors import run
from raglab.core.formats import read_jsonl, write_jsonl
from raglab.core.report import StageReport
from raglab.evaluation.metrics import cosine_scores, exact_match, mean_scores, origin_score
from raglab.evaluation.stage import score_command
from raglab.params.schema import Params
from raglab.retriever.search import EmbedderConfig, load_embedder


def score(params: Params, infer_dir: Path, per_query_dir: Path, report: StageReport) -> dict:
    """EM, cosine and origin score per LLM system and split."""
    p = params.score.generation
    embedder = load_embedder(EmbedderConfig.of(p.cosine_embedder))
    metrics = {}
    for result_file in sorted(infer_dir.glob("*/*.jsonl")):
        split, system, rows = result_file.parent.name, result_file.stem, read_jsonl(result_file)
        report.add_read(f"{split}/{system}", len(rows))
        predictions, golds = [r["prediction"] for r in rows], [r["gold"] for r in rows]
        cosines = cosine_scores(embedder, predictions, golds)
        per_question = [
            {"id": r["id"], "question": r["question"], "gold": r["gold"], "prediction": r["prediction"],
             "em": exact_match(r["prediction"], r["gold"]), "cosine": round(c, 5),
             "origin": origin_score(r["prediction"], r["context"])}
            for r, c in zip(rows, cosines)
        ]
        metrics.setdefault(split, {})[system] = {k: round(v, 5) for k, v in mean_scores(
            [{k: q[k] for k in ("em", "cosine", "origin")} for q in per_question]).items()}
        name = f"{split}/{system}.jsonl"
        report.add_wrote(name, write_jsonl(per_query_dir / name, per_question))
    return metrics


main = score_command("generation", score, depth=3)

if __name__ == "__main__":
    run(main)
