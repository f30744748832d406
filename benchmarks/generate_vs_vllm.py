"""Generation throughput and agreement: transformers' generate vs vLLM's server, same model, prompts and budget.

Takes --n questions from a JSONL eval file (build_sft's `data/sft/eval/test.jsonl`: `context`,
`question`, `answers`; or distill_cot's `data/distill/eval.jsonl`: `question`) and renders them with the
prompt of params.yaml (the CMRC template, or distill_cot.prompt for maths). Greedy, --max-tokens new
tokens. HF: `raglab.serving.vllm.hf_generate` at batch size 1 and --hf-batch (left-padded); vLLM: the
repo's server lifecycle (`raglab.serving.vllm.VLLMServer`, float32 on a CPU unless --dtype) at
--concurrency requests in flight. Prints questions/s and generated tokens/s for each, the vLLM/HF
ratio, and on how many questions the answers are identical.

    python benchmarks/generate_vs_vllm.py --model models/base/llm --eval data/sft/eval/test.jsonl --n 32
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
import yaml


def chats(rows: list[dict], params: dict) -> list[list[dict]]:
    from raglab.core.prompts import chat_messages, render, render_question

    system = params["prompt"]["system"]
    if "context" in rows[0]:
        return [chat_messages(system, render(params["prompt"]["template"], r["context"], r["question"])) for r in rows]
    return [chat_messages(system, render_question(params["distill_cot"]["prompt"], r["question"])) for r in rows]


@click.command()
@click.option("--model", "model_dir", required=True, type=click.Path(file_okay=False, exists=True))
@click.option("--eval", "eval_file", required=True, type=click.Path(dir_okay=False, exists=True))
@click.option("--params", "params_file", default="params.yaml", show_default=True)
@click.option("--n", default=32, show_default=True)
@click.option("--max-tokens", default=64, show_default=True)
@click.option("--hf-batch", default=8, show_default=True)
@click.option("--concurrency", default=16, show_default=True)
@click.option("--dtype", default="auto", show_default=True, help="vLLM dtype (auto: float32 on a CPU).")
@click.option("--reserved-cores", type=int, default=0, show_default=True,
              help="Cores vLLM's CPU engine leaves to its API server.")
def main(model_dir, eval_file, params_file, n, max_tokens, hf_batch, concurrency, dtype, reserved_cores) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from raglab.serving.client import Endpoint, Request, Sampling, chat_many
    from raglab.serving.vllm import VLLMServer, hf_generate

    params = yaml.safe_load(Path(params_file).read_text(encoding="utf-8"))
    rows = [json.loads(line) for line in Path(eval_file).read_text(encoding="utf-8").splitlines()[:n]]
    conversations = chats(rows, params)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    print(f"{len(conversations)} questions, {max_tokens} new tokens at most, torch {torch.get_num_threads()} threads")

    def tokens(texts):
        return sum(len(tok(t, add_special_tokens=False)["input_ids"]) + 1 for t in texts)  # + end of turn

    results = {}
    for batch in sorted({1, hf_batch}):
        t0 = time.perf_counter()
        replies = hf_generate(model, tok, conversations, max_tokens, batch_size=batch)
        results[f"HF generate, batch {batch}"] = (time.perf_counter() - t0, replies)
    del model
    with VLLMServer(model_dir, dtype=dtype, cpu_reserved_cores=reserved_cores, max_model_len=2048,
                    log_file=Path("/tmp") / "bench-vllm.log") as server:
        endpoint = Endpoint(server.base_url, "base")
        chat_many(endpoint, [Request(conversations[0])], Sampling(4))  # warm-up
        t0 = time.perf_counter()
        served = chat_many(endpoint, [Request(c) for c in conversations], Sampling(max_tokens), concurrency=concurrency)
        results[f"vLLM server, concurrency {concurrency}"] = (time.perf_counter() - t0, [r.content for r in served])

    reference = results[f"HF generate, batch {hf_batch}"]
    for name, (seconds, replies) in results.items():
        agree = sum(a.strip() == b.strip() for a, b in zip(replies, results["HF generate, batch 1"][1]))
        print(f"{name:28s} {seconds:7.1f} s  {len(replies) / seconds:6.2f} questions/s  "
              f"{tokens(replies) / seconds:7.1f} tokens/s  identical to HF batch 1: {agree}/{len(replies)}")
    vllm_s = results[f"vLLM server, concurrency {concurrency}"][0]
    print(f"vLLM throughput / HF batch {hf_batch}: {reference[0] / vllm_s:.1f}x; "
          f"/ HF batch 1: {results['HF generate, batch 1'][0] / vllm_s:.1f}x")


if __name__ == "__main__":
    main()
