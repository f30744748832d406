"""Stage `train_embed`: contrastive fine-tuning of the embedding model (FlagEmbedding trainer). With
`train_embed.num_processes` > 1 the same script re-launches itself under torchrun (data-parallel processes)."""

import click

from raglab.core.errors import run
from raglab.core.formats import write_json
from raglab.core.report import StageReport
from raglab.models.trainer import relaunch_distributed
from raglab.params.loader import load_params
from raglab.retriever.search import EmbedderConfig
from raglab.retriever.train import train_embedder


@click.command()
@click.option("--params", "params_file", default="params.yaml", show_default=True)
@click.option("--train", "train_file", default="data/embed/train.jsonl", show_default=True, type=click.Path(dir_okay=False, exists=True))
@click.option("--out", "out_dir", default="models/embedder", show_default=True, type=click.Path(file_okay=False))
@click.option("--live", "live_dir", default="dvclive/train_embed", show_default=True, type=click.Path(file_okay=False))
@click.option("--metrics", "metrics_file", default="metrics/train_embed.json", show_default=True, type=click.Path(dir_okay=False))
@click.option("--checkpoints", "checkpoint_dir", default="models/embed-checkpoints", show_default=True,
              type=click.Path(file_okay=False), help="Resumable checkpoints (outside DVC's outputs).")
def main(params_file: str, train_file: str, out_dir: str, live_dir: str, metrics_file: str, checkpoint_dir: str) -> None:
    params = load_params(params_file)
    hp = params.train_embed
    relaunch_distributed(hp.num_processes, "stages.train_embed")
    with StageReport("train_embed") as report:
        summary = train_embedder(EmbedderConfig.of(params.embedder), hp, train_file, out_dir, live_dir, checkpoint_dir)
        report.add_read(train_file, summary["train_rows"])
        report.add_wrote(out_dir, 1)
        write_json(metrics_file, summary)


if __name__ == "__main__":
    run(main)
