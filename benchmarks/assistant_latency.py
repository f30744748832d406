"""Latency of the assistant per request: p50 / p95 of the whole request, and of routing, retrieval and
generation apart, for each route.

Starts the assistant (raglab.assistant) on an experiment's outputs (default: the demo, i.e. the tiny
random LLM served by vLLM and MiniLM; run `make demo` first), then asks it, one request at a time
through its OpenAI-compatible endpoint, the experiment's CMRC eval questions (retrieval route) and
GSM8K eval questions (maths route). The whole request is timed by the client; the steps by the
assistant (its `raglab.timings`). The first --warmup requests are not counted.

Then a concurrency sweep (--concurrency 1,4,16,64): at each level, that many clients ask at once
(--requests each level, no retries), and it prints throughput, p50 / p95 of the answered requests and the
share refused with 429 (beyond params assistant.max_in_flight).

    python benchmarks/assistant_latency.py [--rev demo] [--requests 40] [--concurrency 1,4,16,64]
"""

from __future__ import annotations

import json
import platform
import time
from contextlib import ExitStack
from pathlib import Path

import click
import numpy as np

from raglab.assistant.server import create_app, serve_in_thread
from raglab.assistant.system import start
from raglab.serving.vllm import free_port


def questions(rev: str, n: int) -> list[str]:
    """Up to n/2 CMRC and n/2 GSM8K eval questions of the experiment, interleaved."""
    from dvc.api import DVCFileSystem

    from raglab.experiments.dvc import experiment_ref

    fs = DVCFileSystem(".", rev=experiment_ref(rev))
    cmrc = [json.loads(line)["question"] for line in fs.read_text("data/sft/eval/test.jsonl").splitlines()]
    gsm8k = [json.loads(line)["question"] for line in fs.read_text("data/distill/eval.jsonl").splitlines()]
    mixed = [q for pair in zip(cmrc, gsm8k) for q in pair] + cmrc[len(gsm8k):] + gsm8k[len(cmrc):]
    return (mixed * (n // max(1, len(mixed)) + 1))[:n]


@click.command()
@click.option("--rev", default="demo", show_default=True, help="The experiment whose models the assistant serves.")
@click.option("--requests", "n", default=40, show_default=True)
@click.option("--warmup", default=4, show_default=True)
@click.option("--concurrency", default="1,4,16,64", show_default=True, help="Levels of the sweep ('' for none).")
def main(rev: str, n: int, warmup: int, concurrency: str) -> None:
    from openai import OpenAI

    asked = questions(rev, n + warmup)
    with ExitStack() as stack:
        assistant, _ = start(None, rev, stack, Path(".cache/assistant/logs"))
        with serve_in_thread(create_app(assistant), "127.0.0.1", free_port()) as url:
            client = OpenAI(base_url=f"{url}/v1", api_key="unused")
            model = client.models.list().data[0].id
            samples = []
            for i, question in enumerate(asked):
                started = time.perf_counter()
                reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": question}])
                total = time.perf_counter() - started
                if i >= warmup:
                    samples.append({"route": reply.model_extra["raglab"]["route"], "total_s": total,
                                    **reply.model_extra["raglab"]["timings"]})
            levels = [int(c) for c in concurrency.split(",") if c.strip()]
            sweep = [(level, *burst(url, model, asked[warmup:], level)) for level in levels]
    click.echo(f"assistant latency per request ({rev}: retriever {assistant.retriever}, generator "
               f"{assistant.endpoint.model}); {platform.processor() or platform.machine()}, one request at a time")
    click.echo(f"{'route':<6} {'n':>4}  {'step':<13} {'p50 ms':>8} {'p95 ms':>8}")
    for route in sorted({s["route"] for s in samples}):
        rows = [s for s in samples if s["route"] == route]
        for step in ("total_s", "route_s", "retrieval_s", "generation_s"):
            values = [r[step] for r in rows if step in r]
            if values:
                p50, p95 = np.percentile(values, [50, 95]) * 1000
                click.echo(f"{route:<6} {len(values):>4}  {step[:-2]:<13} {p50:>8.1f} {p95:>8.1f}")
    if sweep:
        click.echo(f"\nconcurrency sweep, {len(asked) - warmup} requests a level, no retries "
                   f"(assistant.max_in_flight {assistant.params.assistant.max_in_flight})")
        click.echo(f"{'clients':>7} {'answered/s':>10} {'p50 ms':>8} {'p95 ms':>8} {'429 share':>9}")
        for level, seconds, answered, refused in sweep:
            p50, p95 = np.percentile(answered, [50, 95]) * 1000 if answered else (float("nan"),) * 2
            click.echo(f"{level:>7} {len(answered) / seconds:>10.2f} {p50:>8.1f} {p95:>8.1f} "
                       f"{refused / (len(answered) + refused):>9.2f}")


def burst(url: str, model: str, asked: list[str], clients: int) -> tuple[float, list[float], int]:
    """``clients`` threads ask ``asked`` between them, no retries: wall seconds, the answered requests'
    latencies, and how many were refused with 429."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    def ask(question: str) -> tuple[int, float]:
        started = time.perf_counter()
        r = httpx.post(f"{url}/v1/chat/completions", timeout=3600,
                       json={"model": model, "messages": [{"role": "user", "content": question}]})
        if r.status_code not in (200, 429):
            raise RuntimeError(f"status {r.status_code}: {r.text[:300]}")
        return r.status_code, time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(ask, asked))
    return (time.perf_counter() - started, [s for code, s in results if code == 200],
            sum(code == 429 for code, _ in results))


if __name__ == "__main__":
    main()
