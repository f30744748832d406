"""The embedder's tokenizer: characters it lacks added to its vocabulary (CMRC passages with MiniLM), and the check
that a saved embedder still tokenizes like its base."""


from __future__ import annotations

import logging
import os

log = logging.getLogger("raglab")

# sentence-transformers' name for each FlagEmbedding pooling method
ST_POOLING = {"cls": "cls", "mean": "mean", "last_token": "lasttoken"}


def extend_vocabulary(base_path: str, texts: list[str], min_count: int, seed: int, out_dir: str | os.PathLike,
                      trust_remote_code: bool = False) -> int:
    """Save to ``out_dir`` the base model with a new token for every character of ``texts`` that its
    tokenizer maps to the unknown token and that occurs at least ``min_count`` times; returns how many.

    all-MiniLM-L6-v2's vocabulary holds 244 CJK characters: 55% of the characters of the CMRC
    passages are [UNK] to it (benchmarks/unknown_characters.py), so no amount of fine-tuning lets it tell those passages apart. Each new
    token's embedding is drawn (seeded) from a normal distribution with the per-dimension mean and
    standard deviation of the existing embeddings, and is learned in fine-tuning like every weight.
    """
    from collections import Counter

    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_path, trust_remote_code=trust_remote_code)
    model = AutoModel.from_pretrained(base_path, trust_remote_code=trust_remote_code)
    counts = Counter(c for text in texts for c in text if not c.isspace())
    unknown = [tokenizer.unk_token]
    new = sorted(c for c, n in counts.items() if n >= min_count and tokenizer.tokenize(c) == unknown)
    if new:
        old = model.get_input_embeddings().weight.detach().clone()
        tokenizer.add_tokens(new)
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        generator = torch.Generator().manual_seed(seed)
        noise = torch.randn(len(tokenizer) - old.shape[0], old.shape[1], generator=generator)
        with torch.no_grad():
            model.get_input_embeddings().weight[old.shape[0]:] = old.mean(0) + old.std(0) * noise
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))
    return len(new)


def check_same_tokenizer(model_dir: str | os.PathLike, base_path: str, trust_remote_code: bool = False) -> None:
    """Fail unless the saved model tokenizes like its base (fine-tuning never changes the tokenizer; the base
    of a run with an extended vocabulary is the extended model)."""
    from transformers import AutoTokenizer

    probe = "What was the company's net income in 2023? 公司2023年的净利润是多少？"
    ours, base = (AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)(probe)["input_ids"]
                  for path in (model_dir, base_path))
    if ours != base:
        raise RuntimeError(f"the saved embedder in {model_dir} tokenizes differently from its base {base_path} "
                           f"({ours[:8]}... vs {base[:8]}...): its tokenizer files were not saved correctly")
