"""Stage `train_rerank`: fine-tuning the cross-encoder that reorders the first stage's candidates (FlagEmbedding's
reranker trainer), on the embedder's training rows, with negatives mined by the tuned embedder (or the rows' own);
with train_rerank.enabled false, a note that nothing was trained (no retriever of the params is X+rerank)."""

import click

from raglab.core.errors import run
from raglab.core.formats import write_json
from raglab.core.report import StageReport
from raglab.params.loader import load_params
from raglab.retriever.rerank import RerankerConfig
from raglab.retriever.search import EmbedderConfig
from raglab.retriever.train_rerank import train_reranker, write_not_trained


@click.command()
@click.option("--params", "params_file", default="params.yaml", show_default=True)
@click.option("--train", "train_file", default="data/embed/train.jsonl", show_default=True,
              type=click.Path(dir_okay=False, exists=True))
@click.option("--embedder", "embedder_dir", default="models/embedder", show_default=True,
              type=click.Path(file_okay=False, exists=True), help="The tuned embedder (train_embed), which mines.")
@click.option("--out", "out_dir", default="models/reranker", show_default=True, type=click.Path(file_okay=False))
@click.option("--live", "live_dir", default="dvclive/train_rerank", show_default=True, type=click.Path(file_okay=False))
@click.option("--metrics", "metrics_file", default="metrics/train_rerank.json", show_default=True,
              type=click.Path(dir_okay=False))
@click.option("--checkpoints", "checkpoint_dir", default="models/rerank-checkpoints", show_default=True,
              type=click.Path(file_okay=False), help="Resumable checkpoints (outside DVC's outputs).")
def main(params_file: str, train_file: str, embedder_dir: str, out_dir: str, live_dir: str, metrics_file: str,
         checkpoint_dir: str) -> None:
    params = load_params(params_file)
    with StageReport("train_rerank") as report:
        if not params.train_rerank.enabled:
            write_not_trained(out_dir, live_dir)
            report.add_wrote(f"{out_dir} (nothing trained: train_rerank.enabled is false)", 0)
            write_json(metrics_file, {"train_rows": 0, "steps": 0})
            return
        summary = train_reranker(RerankerConfig.of(params.reranker), params.train_rerank, train_file, out_dir,
                                 live_dir, checkpoint_dir,
                                 EmbedderConfig.of(params.embedder, model=embedder_dir, revision=None))
        report.add_read(train_file, summary["train_rows"])
        report.add_wrote(out_dir, 1)
        write_json(metrics_file, summary)


if __name__ == "__main__":
    run(main)
