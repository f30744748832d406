"""Stage `score`: task metrics for every system, as DVC metrics, per-query files and plots.

Retrieval part: context recall (ragas, non-LLM), context relevance, hit@k,
MRR@k and nDCG@k over each eval split, for each embedder system.
"""

from pathlib import Path

import click
from tqdm import tqdm

from raglab.formats import read_jsonl, write_csv, write_json, write_jsonl
from raglab.metrics import mean_scores, retrieval_scores
from raglab.params import load_params, section
from raglab.report import StageReport


@click.command()
@click.option("--params", "params_file", default="params.yaml", show_default=True)
@click.option("--infer", "infer_dir", default="data/infer", show_default=True, type=click.Path(file_okay=False, exists=True))
@click.option("--metrics", "metrics_dir", default="metrics", show_default=True, type=click.Path(file_okay=False))
@click.option("--per-query", "per_query_dir", default="data/score", show_default=True, type=click.Path(file_okay=False))
def main(params_file: str, infer_dir: str, metrics_dir: str, per_query_dir: str) -> None:
    p = section(load_params(params_file), "score", params_file)["retrieval"]
    kwargs = dict(context_top_n=p["context_top_n"], hit_ks=p["hit_at"], rank_k=p["rank_at"],
                  threshold=p["similarity_threshold"], separator=p["sentence_separator"])
    metrics, plot_rows = {}, []
    with StageReport("score") as report:
        for split_dir in sorted(Path(infer_dir, "retrieval").iterdir()):
            split = split_dir.name
            per_query = {}
            for result_file in sorted(split_dir.glob("*.jsonl")):
                system = result_file.stem
                rows = read_jsonl(result_file)
                report.add_read(f"retrieval/{split}/{system}", len(rows))
                scores = [
                    retrieval_scores([h["text"] for h in r["retrieved"]], r["gold"], **kwargs)
                    for r in tqdm(rows, desc=f"score {split}/{system}", leave=False)
                ]
                metrics.setdefault(split, {})[system] = {k: round(v, 5) for k, v in mean_scores(scores).items()}
                for i, (r, s) in enumerate(zip(rows, scores)):
                    entry = per_query.setdefault(i, {"query": r["query"], "gold": r["gold"]})
                    entry[system] = {"top1": r["retrieved"][0]["text"] if r["retrieved"] else None, **s}
                plot_rows += [{"label": f"{split} {k} {system}", "value": v}
                              for k, v in metrics[split][system].items()]
            report.add_wrote(f"{split} per-query", write_jsonl(Path(per_query_dir) / f"retrieval_{split}.jsonl", per_query.values()))
        write_json(Path(metrics_dir) / "retrieval.json", metrics)
        write_csv(Path(metrics_dir) / "plots" / "retrieval.csv", plot_rows)
        report.extra["metrics"] = metrics


if __name__ == "__main__":
    main()
