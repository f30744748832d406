"""distill_cot's teacher requests at concurrency 1 vs N against a local server with latency.

A scripted OpenAI-compatible teacher (tests/fake_openai.py) answers each request after --latency
seconds with up to --slots requests at once (more wait for a slot), right 70% of the time; the same
distillation (--questions questions, rounds until verified) runs with concurrency 1 and --concurrency,
through the same code as the stage (raglab.generator.distill + raglab.serving.client, no response cache). Prints wall
time, requests and the ratio.

    python benchmarks/distill_concurrency.py
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fake_openai import FakeOpenAI  # noqa: E402
from test_distill import PROMPT, questions, teacher_70  # noqa: E402

from raglab.generator.distill import distill, question_messages  # noqa: E402
from raglab.serving.client import Endpoint, Sampling, chat_many  # noqa: E402


@click.command()
@click.option("--questions", "n", default=200, show_default=True)
@click.option("--latency", default=0.2, show_default=True, help="Seconds per request.")
@click.option("--slots", default=16, show_default=True, help="Requests the server handles at once.")
@click.option("--concurrency", default=16, show_default=True)
def main(n: int, latency: float, slots: int, concurrency: int) -> None:
    gate = threading.Semaphore(slots)

    def script(request):
        with gate:  # a server with `slots` workers
            time.sleep(latency)
            return teacher_70(request)

    results = {}
    for c in (1, concurrency):
        with FakeOpenAI(script) as fake:
            endpoint = Endpoint(fake.base_url, "teacher")

            def ask(requests, round_no, c=c):
                return chat_many(endpoint, requests, Sampling(64, 0.6), concurrency=c, desc=f"c={c} round {round_no + 1}")

            t0 = time.perf_counter()
            outcome = distill(questions(n), question_messages(PROMPT, "sys"), ask, 15, seed=1)
            results[c] = (time.perf_counter() - t0, len(fake.requests), len(outcome.kept))
    for c, (seconds, requests, kept) in results.items():
        print(f"concurrency {c:2d}: {seconds:6.2f} s, {requests} requests, {kept}/{n} kept, "
              f"{requests / seconds:.1f} requests/s")
    print(f"speed-up {results[1][0] / results[concurrency][0]:.1f}x "
          f"(server: {slots} slots, {latency * 1000:.0f} ms a request)")


if __name__ == "__main__":
    main()
