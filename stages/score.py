"""Stage `score`: task metrics for every system, as DVC metrics, per-query files and plots.

Three parts, like serve_infer (`score@retrieval`, `score@generation`, `score@math` in dvc.yaml):

- retrieval: context recall (ragas, non-LLM), context relevance, hit@k, MRR@k and
  nDCG@k over each eval split, for each embedder system; metrics keyed
  `split -> system -> metric`.
- generation: exact match, cosine (embedding model from the params) and origin
  score for each LLM system over each eval split; metrics keyed `split -> system -> metric`.
- math: accuracy of the verified boxed answer after the reasoning (`raglab.maths`), and the share
  of each failure (wrong, no boxed answer, empty) per system; metrics keyed `system -> metric`.
- rag: per retriever, hit@k and MRR of the gold passage; per system (retriever+generator), EM,
  cosine, origin score against the passages the generator got (`origin`) and against the gold
  passage (`origin_gold`), and ragas' answer relevancy and faithfulness when a judge is set
  (`raglab.judge`); keyed `split -> system -> metric`, with `routing -> router kind -> accuracy`.
"""

from pathlib import Path

import click
from tqdm import tqdm

from raglab.errors import run
from raglab.formats import read_jsonl, write_csv, write_json, write_jsonl
from raglab.judge import METRICS as JUDGE_METRICS
from raglab.judge import NOTES as JUDGE_NOTES
from raglab.judge import judge_scores
from raglab.maths import STATUSES, THINK_END, THINK_START, check
from raglab.metrics import cosine_scores, exact_match, hit_at, mean_scores, mrr_at, origin_score, retrieval_scores
from raglab.params import load_params, section
from raglab.report import StageReport
from raglab.retrieval import EmbedderConfig, load_embedder
from raglab.routing import routing_accuracy


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


def score_rag(p: dict, infer_dir: Path, per_query_dir: Path, report: StageReport) -> dict:
    """The RAG system: retrieval (hit@k of the gold passage) and answers of each retriever+generator."""
    metrics = {}
    for split_dir in sorted(d for d in infer_dir.iterdir() if d.is_dir() and (d / "retrieval").is_dir()):
        split, depth = split_dir.name, max(p["hit_at"])
        for result_file in sorted((split_dir / "retrieval").glob("*.jsonl")):
            retriever, rows = result_file.stem, read_jsonl(result_file)
            report.add_read(f"{split}/retrieval/{retriever}", len(rows))
            ranks = [next((i for i, h in enumerate(r["ranked"], start=1) if h["passage"] == r["gold_passage"]), None)
                     for r in rows]
            scores = [{**{f"hit@{k}": hit_at(rank, k) for k in p["hit_at"]}, f"mrr@{depth}": mrr_at(rank, depth)}
                      for rank in ranks]
            metrics.setdefault(split, {})[retriever] = {k: round(v, 5) for k, v in mean_scores(scores).items()}
            write_jsonl(per_query_dir / split / "retrieval" / f"{retriever}.jsonl",
                        ({"id": r["id"], "question": r["question"], "gold_rank": rank, **s}
                         for r, rank, s in zip(rows, ranks, scores)))
        systems = {f.stem: read_jsonl(f) for f in sorted(split_dir.glob("*.jsonl"))}
        if not systems:
            continue
        embedder = load_embedder(EmbedderConfig(**p["cosine_embedder"]))
        # the judge sees every system's answers at once (a served judge starts once)
        everything = [r for rows in systems.values() for r in rows]
        judged = iter(judge_scores(p["judge"], p["judge_model"], p["serving"], p["cosine_embedder"], everything,
                                   per_query_dir / "judge", report))
        for system, rows in systems.items():
            report.add_read(f"{split}/{system}", len(rows))
            cosines = cosine_scores(embedder, [r["prediction"] for r in rows], [r["gold"] for r in rows])
            per_question = [
                {"id": r["id"], "question": r["question"], "gold": r["gold"], "prediction": r["prediction"],
                 "em": exact_match(r["prediction"], r["gold"]), "cosine": round(c, 5),
                 "origin": origin_score(r["prediction"], "\n".join(r["passages"])),
                 "origin_gold": origin_score(r["prediction"], r["gold_passage"]), **next(judged)}
                for r, c in zip(rows, cosines)]
            means = mean_scores([{k: q[k] for k in ("em", "cosine", "origin", "origin_gold")} for q in per_question])
            for name in JUDGE_METRICS if p["judge"]["kind"] != "none" else ():
                values = [q[name] for q in per_question if q[name] is not None]  # a verdict not given is not a 0
                means[name] = sum(values) / len(values) if values else None
                means[f"{name}_judged"] = len(values) / len(rows)
            metrics.setdefault(split, {})[system] = {k: None if v is None else round(v, 5) for k, v in means.items()}
            report.add_wrote(f"{split}/{system}.jsonl", write_jsonl(per_query_dir / split / f"{system}.jsonl", per_question))
    routes = read_jsonl(infer_dir / "routing.jsonl") if (infer_dir / "routing.jsonl").is_file() else []
    if routes:
        report.add_read("routing", len(routes))
        metrics["routing"] = {p["router_kind"]: {k: round(v, 5) for k, v in routing_accuracy(
            [r["route"] for r in routes], [r["predicted"] for r in routes]).items()}}
    if p["judge"]["kind"] in JUDGE_NOTES:
        metrics["judge"] = JUDGE_NOTES[p["judge"]["kind"]]
    return metrics


def plot_rows(metrics: dict, depth: int) -> list[dict]:
    """Flatten {..., system: {metric: value}} into bar-plot rows labelled by their path (numbers only)."""
    if depth == 0:
        return [{"label": "", "value": metrics}] if isinstance(metrics, (int, float)) else []
    if not isinstance(metrics, dict):
        return []
    return [{"label": f"{key} {row['label']}".strip(), "value": row["value"]}
            for key, sub in metrics.items() for row in plot_rows(sub, depth - 1)]


PARTS = {"retrieval": (score_retrieval, 3), "generation": (score_generation, 3),  # scorer, depth of its metrics
         "math": (score_math, 2), "rag": (score_rag, 3)}


@click.command()
@click.argument("part", type=click.Choice(sorted(PARTS)))
@click.option("--params", "params_file", default="params.yaml", show_default=True)
@click.option("--infer", "infer_dir", required=True, type=click.Path(file_okay=False, exists=True),
              help="serve_infer's output folder for this part.")
@click.option("--metrics", "metrics_file", required=True, type=click.Path(dir_okay=False), help="Metrics JSON to write.")
@click.option("--plot", "plot_file", required=True, type=click.Path(dir_okay=False), help="Bar-plot CSV to write.")
@click.option("--per-query", "per_query_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for the per-query results (error analysis).")
@click.option("--judge-model", type=click.Path(file_okay=False), default=None,
              help="rag: the model folder a served judge runs (score.rag.judge.kind served).")
def main(part: str, params_file: str, infer_dir: str, metrics_file: str, plot_file: str, per_query_dir: str,
         judge_model: str | None) -> None:
    """Score the PART (retrieval, generation, math or rag) outputs of serve_infer."""
    params = load_params(params_file)
    p = section(params, "score", params_file).get(part) or {}  # math has no parameters
    if part == "rag":  # answers are scored with the generation track's cosine embedder
        p = {**p, "cosine_embedder": params["score"]["generation"]["cosine_embedder"],
             "router_kind": params["serve_infer"]["rag"]["router"]["kind"], "judge_model": judge_model,
             "serving": params["serving"]}
    scorer, depth = PARTS[part]
    with StageReport(f"score@{part}", Path(per_query_dir) / "report.json") as report:
        metrics = scorer(p, Path(infer_dir), Path(per_query_dir), report)
        write_json(metrics_file, metrics)
        write_csv(plot_file, plot_rows(metrics, depth))
        report.extra["metrics"] = metrics


if __name__ == "__main__":
    run(main)
