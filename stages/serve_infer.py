"""Stage `serve_infer`: run every system under test over the eval sets.

Retrieval part: each embedder system (`base` = the untuned model, `tuned` =
train_embed's output) encodes the knowledge base and the eval queries of each
eval split; faiss returns the top-k passages per query.
"""

from pathlib import Path

import click

from raglab.formats import read_jsonl, read_lines, write_jsonl
from raglab.params import load_params, section
from raglab.report import StageReport
from raglab.retrieval import EmbedderConfig, load_embedder, retrieve


def eval_splits(embed_dir: Path) -> list[str]:
    return sorted(p.name for p in embed_dir.iterdir() if (p / "eval.jsonl").is_file() and (p / "kb.txt").is_file())


@click.command()
@click.option("--params", "params_file", default="params.yaml", show_default=True)
@click.option("--embed-data", "embed_dir", default="data/embed", show_default=True, type=click.Path(file_okay=False, exists=True))
@click.option("--tuned-embedder", default="models/embedder", show_default=True, type=click.Path(file_okay=False, exists=True))
@click.option("--out", "out_dir", default="data/infer", show_default=True, type=click.Path(file_okay=False))
def main(params_file: str, embed_dir: str, tuned_embedder: str, out_dir: str) -> None:
    params = load_params(params_file)
    p = section(params, "serve_infer", params_file)["retrieval"]
    embed_dir, out = Path(embed_dir), Path(out_dir)
    systems = {"base": EmbedderConfig.from_params(params), "tuned": EmbedderConfig.from_params(params, model=tuned_embedder, revision=None)}
    splits = eval_splits(embed_dir)
    with StageReport("serve_infer", out / "report.json") as report:
        data = {s: (read_jsonl(embed_dir / s / "eval.jsonl"), read_lines(embed_dir / s / "kb.txt")) for s in splits}
        for split, (rows, kb) in data.items():
            report.add_read(f"{split}/eval.jsonl", len(rows))
            report.add_read(f"{split}/kb.txt", len(kb))
        for system, cfg in systems.items():
            embedder = load_embedder(cfg)
            for split, (rows, kb) in data.items():
                hits = retrieve(embedder, [r["query"] for r in rows], kb, p["top_k"])
                results = [{"query": r["query"], "gold": r["corpus"][0], "retrieved": h} for r, h in zip(rows, hits)]
                name = f"retrieval/{split}/{system}.jsonl"
                report.add_wrote(name, write_jsonl(out / name, results))


if __name__ == "__main__":
    main()
