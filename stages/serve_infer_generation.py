"""Stage `serve_infer_generation`: vLLM's OpenAI-compatible server (127.0.0.1, free port) serves the base LLM
as `base` and base + LoRA adapter as `sft` (`serving.adapter`: one server with vLLM's LoRA support, or a
peft-merged copy on a CPU); build_sft's eval splits go through the `openai` client with the prompt template
and system prompt the model was trained with; external OpenAI-compatible systems from the params are asked
the same way. Replies go through the response cache (`RAGLAB_CACHE`); servers are always shut down."""

from pathlib import Path

import click

from raglab.core.errors import run
from raglab.core.formats import read_jsonl, write_jsonl
from raglab.core.prompts import chat_messages, render
from raglab.core.report import StageReport
from raglab.params.loader import load_params
from raglab.params.schema import Params
from raglab.serving.cache import response_cache
from raglab.serving.client import Sampling
from raglab.serving.systems import ask, systems_to_ask


def run_generation(params: Params, sft_dir: Path, base_dir: str, adapter: str, out: Path, report: StageReport) -> None:
    g, prompt, serving = params.serve_infer.generation, params.prompt, params.serving
    splits = {}
    for split in g.splits:
        path = sft_dir / "eval" / f"{split}.jsonl"
        if not path.is_file():
            raise click.ClickException(f"build_sft wrote no eval split '{split}' ({path} is missing; "
                                       "val needs build_sft.val_size > 0)")
        splits[split] = read_jsonl(path)
        report.add_read(str(path), len(splits[split]))
    sampling = Sampling(g.max_tokens, g.temperature)
    cache = response_cache()
    for system, endpoint, identity in systems_to_ask(params, g.systems, g.external, base_dir, adapter, out):
        for split, rows in splits.items():
            chats = [chat_messages(prompt.system, render(prompt.template, r["context"], r["question"]))
                     for r in rows]
            replies = ask(endpoint, chats, sampling, serving, cache, identity, f"{system} {split}")
            results = [{"id": r["id"], "question": r["question"], "context": r["context"], "gold": r["answers"],
                        "golds": r["golds"], "prediction": reply.content} for r, reply in zip(rows, replies)]
            report.add_wrote(f"{split}/{system}.jsonl", write_jsonl(out / split / f"{system}.jsonl", results))


@click.command()
@click.option("--params", "params_file", default="params.yaml", show_default=True)
@click.option("--eval", "sft_dir", required=True, type=click.Path(file_okay=False, exists=True),
              help="build_sft's output (its eval splits are in eval/).")
@click.option("--base", "base_dir", required=True, type=click.Path(file_okay=False, exists=True),
              help="The base LLM folder (download@llm).")
@click.option("--adapter", "adapter_dir", required=True, type=click.Path(file_okay=False, exists=True),
              help="The LoRA adapter (train_llm).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))
def main(params_file: str, sft_dir: str, base_dir: str, adapter_dir: str, out_dir: str) -> None:
    """Answer the reading-comprehension eval questions with every LLM system."""
    out = Path(out_dir)
    with StageReport("serve_infer_generation", out / "report.json") as report:
        run_generation(load_params(params_file), Path(sft_dir), base_dir, adapter_dir, out, report)


if __name__ == "__main__":
    run(main)
