"""Stage `score_generation`: exact match (first gold answer, and `em_any`: any annotator's), CMRC's official
`em_official` and `f1`, cosine (one column
per embedding model of the params) and origin score of each LLM system over each eval split; metrics keyed
`split -> system -> metric`."""

from pathlib import Path

from raglab.core.errors import run
from raglab.core.formats import read_jsonl, write_jsonl
from raglab.core.report import StageReport
from raglab.evaluation.answers import EXACT_METRICS, CosineColumns, answer_scores
from raglab.evaluation.metrics import mean_scores
from raglab.evaluation.stage import score_command
from raglab.params.schema import Params


def score(params: Params, infer_dir: Path, per_query_dir: Path, report: StageReport) -> dict:
    """EM, em_any, em_official, F1, cosine and origin score per LLM system and split."""
    columns = CosineColumns(params.score.generation)
    metrics = {}
    for result_file in sorted(infer_dir.glob("*/*.jsonl")):
        split, system, rows = result_file.parent.name, result_file.stem, read_jsonl(result_file)
        report.add_read(f"{split}/{system}", len(rows))
        per_question = answer_scores(columns, rows, [r["context"] for r in rows])
        metrics.setdefault(split, {})[system] = {k: round(v, 5) for k, v in mean_scores(
            [{k: q[k] for k in (*EXACT_METRICS, *columns.embedders, "origin")} for q in per_question]).items()}
        name = f"{split}/{system}.jsonl"
        report.add_wrote(name, write_jsonl(per_query_dir / name, per_question))
    return metrics


main = score_command("generation", score, depth=3)

if __name__ == "__main__":
    run(main)
