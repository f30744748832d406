"""Stage `score`: task metrics for every system, as DVC metrics, per-query files and plots.

Two parts, like serve_infer (`score@retrieval`, `score@generation` in dvc.yaml):

- retrieval: context recall (ragas, non-LLM), context relevance, hit@k, MRR@k and
  nDCG@k over each eval split, for each embedder system; metrics keyed
  `split -> system -> metric`.
- generation: exact match, cosine (embedding model from the params) and origin
  score for each LLM system; metrics keyed `system -> metric`.
"""

from pathlib import Path

import click
from tqdm import tqdm

from raglab.formats import read_jsonl, write_csv, write_json, write_jsonl
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
    for result_file in sorted(infer_dir.glob("*.jsonl")):
        system, rows = result_file.stem, read_jsonl(result_file)
        report.add_read(system, len(rows))
        predictions, golds = [r["prediction"] for r in rows], [r["gold"] for r in rows]
        cosines = cosine_scores(embedder, predictions, golds)
        per_question = [
            {"question": r["question"], "gold": r["gold"], "prediction": r["prediction"],
             "em": exact_match(r["prediction"], r["gold"]), "cosine": round(c, 5),
             "origin": origin_score(r["prediction"], r["context"])}
            for r, c in zip(rows, cosines)
        ]
        metrics[system] = {k: round(v, 5) for k, v in mean_scores(
            [{k: q[k] for k in ("em", "cosine", "origin")} for q in per_question]).items()}
        report.add_wrote(f"{system}.jsonl", write_jsonl(per_query_dir / f"{system}.jsonl", per_question))
    return metrics


def plot_rows(metrics: dict, depth: int) -> list[dict]:
    """Flatten {..., system: {metric: value}} into bar-plot rows labelled by their path."""
    if depth == 0:
        return [{"label": "", "value": metrics}]
    return [{"label": f"{key} {row['label']}".strip(), "value": row["value"]}
            for key, sub in metrics.items() for row in plot_rows(sub, depth - 1)]


PARTS = {"retrieval": (score_retrieval, 3), "generation": (score_generation, 2)}  # scorer, depth of its metrics


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
    """Score the PART (retrieval or generation) outputs of serve_infer."""
    p = section(section(load_params(params_file), "score", params_file), part, params_file)
    scorer, depth = PARTS[part]
    with StageReport(f"score@{part}", Path(per_query_dir) / "report.json") as report:
        metrics = scorer(p, Path(infer_dir), Path(per_query_dir), report)
        write_json(metrics_file, metrics)
        write_csv(plot_file, plot_rows(metrics, depth))
        report.extra["metrics"] = metrics


if __name__ == "__main__":
    main()
