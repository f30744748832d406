"""Seconds from launch to healthy, and to answer a batch, of vLLM serving a model on this machine: compiled
(vLLM's default on a CPU: torch.compile with inductor, cached under VLLM_CACHE_ROOT) vs ``enforce_eager``.

Each variant starts the server ``--starts`` times (the first start of a compiled server fills the compile cache,
the next ones read it), then answers ``--questions`` chat requests of ``--max-tokens`` tokens each. It is the
choice the demo profile makes for the tiny random-weight LLM, whose servers start many times in a demo and in CI.

    HF_HUB_OFFLINE=1 python benchmarks/vllm_startup.py --model .cache/tiny-llm
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import click

from raglab.core.machine import bf16_flags
from raglab.serving.client import chat_all
from raglab.serving.types import Endpoint
from raglab.serving.vllm import VLLMServer


@click.command()
@click.option("--model", "model_dir", required=True, type=click.Path(file_okay=False, exists=True))
@click.option("--starts", default=2, show_default=True)
@click.option("--questions", default=32, show_default=True)
@click.option("--max-tokens", default=32, show_default=True)
@click.option("--max-model-len", default=2048, show_default=True)
def main(model_dir: str, starts: int, questions: int, max_tokens: int, max_model_len: int) -> None:
    conversations = [[{"role": "user", "content": f"Question {i}: how many apples are {i} and {i + 3}?"}]
                     for i in range(questions)]
    click.echo(f"CPU bf16 flags: {', '.join(bf16_flags()) or 'none'}; {questions} questions x {max_tokens} tokens")
    for eager in (False, True):
        name = "enforce_eager" if eager else "compiled"
        with tempfile.TemporaryDirectory(prefix="vllm-bench-") as logs:
            for start in range(1, starts + 1):
                began = time.perf_counter()
                with VLLMServer(model_dir, max_model_len=max_model_len, enforce_eager=eager, chunked_prefill=False,
                                max_num_batched_tokens=max_model_len, log_file=Path(logs) / f"{name}.log") as server:
                    healthy = time.perf_counter() - began
                    began = time.perf_counter()
                    chat_all(Endpoint(server.base_url, server.served_name), conversations, max_tokens=max_tokens)
                    answered = time.perf_counter() - began
                click.echo(f"{name:14s} start {start}: healthy in {healthy:6.1f} s, {questions} answers in "
                           f"{answered:6.1f} s")


if __name__ == "__main__":
    main()
