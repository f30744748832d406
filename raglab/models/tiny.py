"""A tiny random-weight causal LM, built locally, for the offline demo and the tests.

No pretrained causal LM can be downloaded on a machine without the hub, so the
generator track's demo and tests run on a model this module builds: the Qwen2
architecture (what vLLM's CPU build serves) with hidden size 128, 2 layers, 4
attention heads and 2 KV heads (head_dim 32: vLLM's CPU attention rejects 16),
a byte-level BPE tokenizer trained with `tokenizers` on the given texts, and a
ChatML chat template. Weights are saved as safetensors.

    python -m raglab.models.tiny --out models/tiny-llm --corpus data/demo-mirror
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import click

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def corpus_texts(root: str | Path) -> Iterator[str]:
    """Every string value in the JSON, JSONL and CSV files under ``root``."""
    import csv

    def strings(obj) -> Iterator[str]:
        if isinstance(obj, str):
            yield obj
        elif isinstance(obj, dict):
            for v in obj.values():
                yield from strings(v)
        elif isinstance(obj, list):
            for v in obj:
                yield from strings(v)

    for path in sorted(Path(root).rglob("*")):
        if path.suffix == ".json":
            yield from strings(json.loads(path.read_text(encoding="utf-8")))
        elif path.suffix == ".jsonl":
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    yield from strings(json.loads(line))
        elif path.suffix == ".csv":
            with open(path, encoding="utf-8", newline="") as f:
                for row in csv.DictReader(f):
                    yield from (v for v in row.values() if v)


def train_tokenizer(texts: Iterable[str], vocab_size: int):
    """A byte-level BPE tokenizer (GPT-2/Qwen style) with ChatML special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        additional_special_tokens=SPECIAL_TOKENS[1:],
        chat_template=CHATML_TEMPLATE,
        clean_up_tokenization_spaces=False,
    )


def build_tiny_model(out: str | Path, texts: Iterable[str], vocab_size: int = 4096, seed: int = 0,
                     hidden_size: int = 128, layers: int = 2, heads: int = 4, kv_heads: int = 2,
                     max_positions: int = 8192) -> Path:
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    out = Path(out)
    tokenizer = train_tokenizer(texts, vocab_size)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=hidden_size // heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        # Wider than the usual 0.02: with tied embeddings and LoRA leaving them frozen, the logits can
        # only separate tokens if the embedding vectors are long enough.
        initializer_range=0.2,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


@click.command()
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Directory to write the model to.")
@click.option("--corpus", "corpus_dir", required=True, type=click.Path(file_okay=False, exists=True),
              help="Directory of JSON/JSONL/CSV files whose texts train the tokenizer.")
@click.option("--vocab-size", default=4096, show_default=True)
@click.option("--seed", default=0, show_default=True)
def main(out: str, corpus_dir: str, vocab_size: int, seed: int) -> None:
    """Build the tiny random-weight Qwen2 model and its tokenizer."""
    path = build_tiny_model(out, corpus_texts(corpus_dir), vocab_size=vocab_size, seed=seed)
    click.echo(f"tiny model written to {path}")


if __name__ == "__main__":
    main()
