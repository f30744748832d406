"""Stage `score`: task metrics for every system, as DVC metrics, per-query files and plots.

Three parts, like serve_infer (`score@retrieval`, `score@generation`, `score@math` in dvc.yaml):

- retrieval: context recall (ragas, non-LLM), context relevance, hit@k, MRR@k and
  nDCG@k over each eval split, for each embedder system; metrics keyed
  `split -> system -> metric`.
- generation: exact match, cosine (embedding model from the params) and origin
  score for each LLM system over each eval split; metrics keyed `split -> system -> metric`.
- math: accuracy of the verified boxed answer after the reasoning (`raglab.maths`), and the share
  of each failure (wrong, no boxed answer, empty) per system; metrics keyed `system -> metric`.
"""

from pathlib import Path

import click
from tqdm import tqdm

from raglab.errors import run
from raglab.formats import read_jsonl, write_csv, write_json, write_jsonl
from raglab.maths import STATUSES, THINK_END, THINK_START, check
from raglab.metrics import cosine_scores, exact_match, mean_scores, origin_score, retrieval_scores
from raglab.params import load_params, section
from raglab.report import StageReport
from raglab.retrieval import EmbedderConfig, load_embedder


def score_retrieval(p: dict, infer_dir: Path, per_query_dir: Path, report: StageReport) -> dict:
    kwargs = dict(context_top_n=p["context_top_n"], hit_ks=p["hit_at"], rank_k=p["rank_at"],
                  threshold=p["similarity_threshold"], separator=p["sentence_separator"])
    metrics = {}
    for split_dir in sorted(d for d in infer_dir.iterdir() if d.is_dir()):
        split, per_query = split_dir.name, {}
        for result_file in sorted(split_dir.glob("*.jsonl")):
            system, rows = result_file.stem, read_jsonl(result_file)
            report.add_read(f"{split}/{system}", len(rows))
            scores = [retrieval_scores([h["text"] for h in r["retrieved"]], r["gold"], **kwargs)
                      for r in tqdm(rows, desc=f"score {split}/{system}", leave=False)]
            metrics.setdefault(split, {})[system] = {k: round(v, 5) for k, v in mean_scores(scores).items()}
            for i, (r, s) in enumerate(zip(rows, scores)):
                entry = per_query.setdefault(i, {"query": r["query"], "gold": r["gold"]})
                entry[system] = {"top1": r["retrieved"][0]["text"] if r["retrieved"] else None, **s}
        report.add_wrote(f"{split}.jsonl", write_jsonl(per_query_dir / f"{split}.jsonl", per_query.values()))
    return metrics


def score_generation(p: dict, infer_dir: Path, per_query_dir: Path, report: StageReport) -> dict:
    embedder = load_embedder(EmbedderConfig(**p["cosine_embedder"]))
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


def score_math(p: dict, infer_dir: Path, per_query_dir: Path, report: StageReport) -> dict:
    """Accuracy: the boxed answer after the reasoning equals the gold; per question, the answer and why it failed."""
    metrics = {}
    for result_file in sorted(infer_dir.glob("*.jsonl")):
        system, rows = result_file.stem, read_jsonl(result_file)
        report.add_read(system, len(rows))
        per_question = []
        for r in tqdm(rows, desc=f"score {system}", leave=False):
            verdict = check(r["gold"], r["prediction"])
            per_question.append({"question": r["question"], "gold": r["gold"], "answer": verdict.answer,
                                 "status": verdict.status, "accuracy": float(verdict.correct),
                                 "unclosed_think": THINK_START in r["prediction"] and THINK_END not in r["prediction"],
                                 "prediction": r["prediction"]})
        statuses = [q["status"] for q in per_question]
        metrics[system] = {"accuracy": round(mean_scores([{"a": q["accuracy"]} for q in per_question]).get("a", 0.0), 5),
                           **{f"share_{s}": round(statuses.count(s) / max(1, len(statuses)), 5)
                              for s in STATUSES if s != "correct"}}
        report.add_wrote(f"{system}.jsonl", write_jsonl(per_query_dir / f"{system}.jsonl", per_question))
    return metrics


def plot_rows(metrics: dict, depth: int) -> list[dict]:
    """Flatten {..., system: {metric: value}} into bar-plot rows labelled by their path."""
    if depth == 0:
        return [{"label": "", "value": metrics}]
    return [{"label": f"{key} {row['label']}".strip(), "value": row["value"]}
            for key, sub in metrics.items() for row in plot_rows(sub, depth - 1)]


PARTS = {"retrieval": (score_retrieval, 3), "generation": (score_generation, 3),  # scorer, depth of its metrics
         "math": (score_math, 2)}


@click.command()
@click.argument("part", type=click.Choice(sorted(PARTS)))
@click.option("--params", "params_file", default="params.yaml", show_default=True)
@click.option("--infer", "infer_dir", required=True, type=click.Path(file_okay=False, exists=True),
              help="serve_infer's output folder for this part.")
@click.option("--metrics", "metrics_file", required=True, type=click.Path(dir_okay=False), help="Metrics JSON to write.")
@click.option("--plot", "plot_file", required=True, type=click.Path(dir_okay=False), help="Bar-plot CSV to write.")
@click.option("--per-query", "per_query_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for the per-query results (error analysis).")
def main(part: str, params_file: str, infer_dir: str, metrics_file: str, plot_file: str, per_query_dir: str) -> None:
    """Score the PART (retrieval, generation or math) outputs of serve_infer."""
    p = section(load_params(params_file), "score", params_file).get(part) or {}  # math has no parameters
    scorer, depth = PARTS[part]
    with StageReport(f"score@{part}", Path(per_query_dir) / "report.json") as report:
        metrics = scorer(p, Path(infer_dir), Path(per_query_dir), report)
        write_json(metrics_file, metrics)
        write_csv(plot_file, plot_rows(metrics, depth))
        report.extra["metrics"] = metrics


if __name__ == "__main__":
    run(main)
