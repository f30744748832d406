"""Stage `serve_infer`: run every system under test over the eval sets.

Two parts (`serve_infer@retrieval`, `serve_infer@generation` in dvc.yaml), so that
a change on one track never re-runs the other:

- retrieval: each embedder system (`base` = the untuned model, `tuned` =
  train_embed's output) encodes the knowledge base and the queries of each eval
  split; faiss returns the top-k passages per query.
- generation: vLLM's OpenAI-compatible server (127.0.0.1, free port) serves the
  base LLM as `base` and the LoRA adapter as `sft`; the eval prompts go through
  the `openai` client; external OpenAI-compatible systems from the params are
  queried the same way. The server is always shut down.
"""

from pathlib import Path

import click

from raglab.client import Endpoint, chat_all
from raglab.formats import read_jsonl, read_lines, write_jsonl
from raglab.params import load_params, section
from raglab.prompts import chat_messages, render
from raglab.report import StageReport
from raglab.retrieval import EmbedderConfig, load_embedder, retrieve
from raglab.serving import BASE_NAME, VLLMServer, adapter_rank

SFT_NAME = "sft"


def eval_splits(embed_dir: Path) -> list[str]:
    return sorted(p.name for p in embed_dir.iterdir() if (p / "eval.jsonl").is_file() and (p / "kb.txt").is_file())


def run_retrieval(params: dict, embed_dir: Path, tuned_embedder: str, out: Path, report: StageReport) -> None:
    top_k = params["serve_infer"]["retrieval"]["top_k"]
    systems = {"base": EmbedderConfig.from_params(params),
               "tuned": EmbedderConfig.from_params(params, model=tuned_embedder, revision=None)}
    data = {s: (read_jsonl(embed_dir / s / "eval.jsonl"), read_lines(embed_dir / s / "kb.txt")) for s in eval_splits(embed_dir)}
    if not data:
        raise click.ClickException(f"{embed_dir} holds no eval split (a folder with eval.jsonl and kb.txt)")
    for split, (rows, kb) in data.items():
        report.add_read(f"{split}/eval.jsonl", len(rows))
        report.add_read(f"{split}/kb.txt", len(kb))
    for system, cfg in systems.items():
        embedder = load_embedder(cfg)
        for split, (rows, kb) in data.items():
            hits = retrieve(embedder, [r["query"] for r in rows], kb, top_k)
            results = [{"query": r["query"], "gold": r["corpus"][0], "retrieved": h} for r, h in zip(rows, hits)]
            name = f"{split}/{system}.jsonl"
            report.add_wrote(name, write_jsonl(out / name, results))


def run_generation(params: dict, eval_file: str, adapter: str, out: Path, report: StageReport) -> None:
    g, llm, prompt = params["serve_infer"]["generation"], params["llm"], params["prompt"]
    rows = read_jsonl(eval_file)
    report.add_read(eval_file, len(rows))
    conversations = [chat_messages(prompt["system"], render(prompt["template"], r["context"], r["question"])) for r in rows]

    def save(system: str, predictions: list[str]) -> None:
        results = [{"id": r["id"], "question": r["question"], "context": r["context"], "gold": r["answers"],
                    "prediction": p} for r, p in zip(rows, predictions)]
        report.add_wrote(f"{system}.jsonl", write_jsonl(out / f"{system}.jsonl", results))

    ask = dict(max_tokens=g["max_tokens"], temperature=g["temperature"], concurrency=g["concurrency"])
    if unknown := set(g["systems"]) - {BASE_NAME, SFT_NAME}:
        raise click.BadParameter(f"serve_infer.generation.systems: unknown {sorted(unknown)} (local systems: base, sft)")
    local = list(g["systems"])
    if local:
        server = VLLMServer(
            llm["model"], revision=llm.get("revision"), trust_remote_code=llm["trust_remote_code"],
            lora_modules={SFT_NAME: adapter} if SFT_NAME in local else {},
            max_lora_rank=adapter_rank(adapter) if SFT_NAME in local else 8,
            tensor_parallel_size=g["tensor_parallel_size"], gpu_memory_utilization=g["gpu_memory_utilization"],
            max_model_len=g["max_model_len"], cpu_kv_cache_gib=g["cpu_kv_cache_gib"],
            startup_timeout_s=g["startup_timeout_s"], log_file=out / "vllm.log",
        )
        with server:
            for system in local:
                save(system, chat_all(Endpoint(server.base_url, system), conversations, desc=system, **ask))
    for ext in g["external"]:
        endpoint = Endpoint(ext["base_url"], ext["model"], ext.get("api_key_env"))
        save(ext["name"], chat_all(endpoint, conversations, desc=ext["name"], **ask))


@click.command()
@click.argument("part", type=click.Choice(["retrieval", "generation"]))
@click.option("--params", "params_file", default="params.yaml", show_default=True)
@click.option("--eval", "eval_path", required=True, type=click.Path(exists=True),
              help="retrieval: build_embed_negatives' output folder; generation: build_sft's eval.jsonl.")
@click.option("--model", "model_dir", required=True, type=click.Path(file_okay=False, exists=True),
              help="retrieval: the tuned embedder; generation: the LoRA adapter.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))
def main(part: str, params_file: str, eval_path: str, model_dir: str, out_dir: str) -> None:
    """Run the PART (retrieval or generation) systems over the eval set; write their outputs to --out."""
    params = load_params(params_file)
    for group in ("serve_infer", "embedder") if part == "retrieval" else ("serve_infer", "llm", "prompt"):
        section(params, group, params_file)
    out = Path(out_dir)
    with StageReport(f"serve_infer@{part}", out / "report.json") as report:
        if part == "retrieval":
            run_retrieval(params, Path(eval_path), model_dir, out, report)
        else:
            run_generation(params, eval_path, model_dir, out, report)


if __name__ == "__main__":
    main()
