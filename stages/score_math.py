"""Stage `score_math`: accuracy of the verified boxed answer after the closed reasoning (strict; `accuracy`), of
the last boxed answer anywhere (`accuracy_lenient`), and the share of each failure (wrong, no boxed answer, empty,
reasoning never closed) per system (`raglab.generator.maths`), and the p50 / p95 of the answers' lengths in tokens
(`completion_tokens_p95` <= 64: 95 % of the answers within 64 tokens); metrics keyed `system -> metric`."""

from pathlib import Path

from tqdm import tqdm

from raglab.core.errors import run
from raglab.core.formats import read_jsonl, write_jsonl
from raglab.core.report import StageReport
from raglab.evaluation.metrics import mean_scores, percentiles
from raglab.evaluation.stage import score_command
from raglab.generator.maths import STATUSES, THINK_END, THINK_START, check
from raglab.params.schema import Params


def score(params: Params, infer_dir: Path, per_query_dir: Path, report: StageReport) -> dict:
    """accuracy of the boxed answer after the closed reasoning (strict) and of the last box anywhere (lenient),
    and the share of each failure, per system."""
    metrics = {}
    for result_file in sorted(infer_dir.glob("*.jsonl")):
        system, rows = result_file.stem, read_jsonl(result_file)
        report.add_read(system, len(rows))
        per_question = []
        for r in tqdm(rows, desc=f"score {system}", leave=False):
            strict, lenient = check(r["gold"], r["prediction"]), check(r["gold"], r["prediction"], strict=False)
            per_question.append({"question": r["question"], "gold": r["gold"], "answer": strict.answer,
                                 "status": strict.status, "accuracy": float(strict.correct),
                                 "accuracy_lenient": float(lenient.correct),
                                 "unclosed_think": THINK_START in r["prediction"] and THINK_END not in r["prediction"],
                                 "completion_tokens": r.get("completion_tokens"), "prediction": r["prediction"]})
        statuses = [q["status"] for q in per_question]
        means = mean_scores([{k: q[k] for k in ("accuracy", "accuracy_lenient")} for q in per_question])
        metrics[system] = {**{k: round(means.get(k, 0.0), 5) for k in ("accuracy", "accuracy_lenient")},
                           **{f"share_{s}": round(statuses.count(s) / max(1, len(statuses)), 5)
                              for s in STATUSES if s != "correct"},
                           **percentiles(per_question, "completion_tokens", "completion_tokens")}
        report.add_wrote(f"{system}.jsonl", write_jsonl(per_query_dir / f"{system}.jsonl", per_question))
    return metrics


main = score_command("math", score, depth=2)

if __name__ == "__main__":
    run(main)
