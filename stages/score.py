"""Stage `score`: task metrics for every system, as DVC metrics, per-query files and plots.

Retrieval: context recall (ragas, non-LLM), context relevance, hit@k, MRR@k and
nDCG@k over each eval split, for each embedder system.
Generation: exact match, cosine (embedding model from the params) and origin
score for each LLM system.
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
    for split_dir in sorted((infer_dir / "retrieval").iterdir()):
        split, per_query = split_dir.name, {}
        for result_file in sorted(split_dir.glob("*.jsonl")):
            system, rows = result_file.stem, read_jsonl(result_file)
            report.add_read(f"retrieval/{split}/{system}", len(rows))
            scores = [retrieval_scores([h["text"] for h in r["retrieved"]], r["gold"], **kwargs)
                      for r in tqdm(rows, desc=f"score {split}/{system}", leave=False)]
            metrics.setdefault(split, {})[system] = {k: round(v, 5) for k, v in mean_scores(scores).items()}
            for i, (r, s) in enumerate(zip(rows, scores)):
                entry = per_query.setdefault(i, {"query": r["query"], "gold": r["gold"]})
                entry[system] = {"top1": r["retrieved"][0]["text"] if r["retrieved"] else None, **s}
        report.add_wrote(f"retrieval_{split}.jsonl", write_jsonl(per_query_dir / f"retrieval_{split}.jsonl", per_query.values()))
    return metrics


def score_generation(p: dict, infer_dir: Path, per_query_dir: Path, report: StageReport) -> dict:
    embedder = load_embedder(EmbedderConfig(**p["cosine_embedder"]))
    metrics = {}
    for result_file in sorted((infer_dir / "generation").glob("*.jsonl")):
        system, rows = result_file.stem, read_jsonl(result_file)
        report.add_read(f"generation/{system}", len(rows))
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
        report.add_wrote(f"generation_{system}.jsonl", write_jsonl(per_query_dir / f"generation_{system}.jsonl", per_question))
    return metrics


def plot_rows(metrics: dict, depth: int) -> list[dict]:
    """Flatten {..., system: {metric: value}} into bar-plot rows labelled by their path."""
    if depth == 0:
        return [{"label": "", "value": metrics}]
    return [{"label": f"{key} {row['label']}".strip(), "value": row["value"]}
            for key, sub in metrics.items() for row in plot_rows(sub, depth - 1)]


@click.command()
@click.option("--params", "params_file", default="params.yaml", show_default=True)
@click.option("--infer", "infer_dir", default="data/infer", show_default=True, type=click.Path(file_okay=False, exists=True))
@click.option("--metrics", "metrics_dir", default="metrics", show_default=True, type=click.Path(file_okay=False))
@click.option("--per-query", "per_query_dir", default="data/score", show_default=True, type=click.Path(file_okay=False))
def main(params_file: str, infer_dir: str, metrics_dir: str, per_query_dir: str) -> None:
    p = section(load_params(params_file), "score", params_file)
    infer, per_query, out = Path(infer_dir), Path(per_query_dir), Path(metrics_dir)
    with StageReport("score") as report:
        retrieval = score_retrieval(p["retrieval"], infer, per_query, report)
        write_json(out / "retrieval.json", retrieval)
        write_csv(out / "plots" / "retrieval.csv", plot_rows(retrieval, 3))
        generation = score_generation(p["generation"], infer, per_query, report)
        write_json(out / "generation.json", generation)
        write_csv(out / "plots" / "generation.csv", plot_rows(generation, 2))
        report.extra["metrics"] = {"retrieval": retrieval, "generation": generation}


if __name__ == "__main__":
    main()
