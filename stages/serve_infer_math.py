"""Stage `serve_infer_math`: distill_cot's GSM8K eval questions, with the distillation prompt, to `base`, `sft`
(their assistant turn starts with `think_prefix`), the `teacher` (served or external, as it was asked during
distillation) and external systems. Replies go through the response cache; servers are always shut down."""

from pathlib import Path

import click

from raglab.core.errors import run
from raglab.core.formats import read_jsonl, write_jsonl
from raglab.core.prompts import chat_messages, render_question
from raglab.core.report import StageReport
from raglab.generator.teacher import teacher_endpoint
from raglab.params.loader import load_params
from raglab.params.schema import Params
from raglab.serving.cache import response_cache
from raglab.serving.client import Sampling
from raglab.serving.systems import TEACHER, ask, systems_to_ask
from raglab.serving.vllm import BASE_NAME, SFT_NAME


def run_math(params: Params, distill_dir: Path, base_dir: str, adapter: str, teacher_dir: str, out: Path,
             report: StageReport) -> None:
    m, d, serving = params.serve_infer.math, params.distill_cot, params.serving
    path = distill_dir / "eval.jsonl"
    rows = read_jsonl(path)
    report.add_read(str(path), len(rows))
    system_prompt = params.prompt.system
    questions = [chat_messages(system_prompt, render_question(d.prompt, r["question"])) for r in rows]
    cache = response_cache()

    def save(system: str, replies) -> None:
        results = [{"question": r["question"], "gold": r["gold"], "reasoning": reply.reasoning,
                    "prediction": reply.content, "completion_tokens": reply.completion_tokens}
                   for r, reply in zip(rows, replies)]
        report.add_wrote(f"{system}.jsonl", write_jsonl(out / f"{system}.jsonl", results))

    # the local students continue an assistant turn that starts with the think prefix
    student = Sampling(m.max_tokens, m.temperature,
                       extra_body={"continue_final_message": True, "add_generation_prompt": False})
    prefixed = [q + [{"role": "assistant", "content": m.think_prefix}] for q in questions]
    plain = Sampling(m.max_tokens, m.temperature)
    for system, endpoint, identity in systems_to_ask(params, m.systems, m.external, base_dir, adapter, out):
        local = system in (BASE_NAME, SFT_NAME)
        replies = ask(endpoint, prefixed if local else questions, student if local else plain, serving, cache,
                      identity, system)
        if local:  # the prefix is part of the answer
            for reply in replies:
                reply.content = m.think_prefix + reply.content
        save(system, replies)
    if TEACHER in m.systems:
        with teacher_endpoint(d.teacher, teacher_dir, serving, out) as (endpoint, identity):
            save(TEACHER, ask(endpoint, questions, plain, serving, cache, identity, TEACHER))


@click.command()
@click.option("--params", "params_file", default="params.yaml", show_default=True)
@click.option("--eval", "distill_dir", required=True, type=click.Path(file_okay=False, exists=True),
              help="distill_cot's output (its eval.jsonl).")
@click.option("--base", "base_dir", required=True, type=click.Path(file_okay=False, exists=True),
              help="The base LLM folder (download@llm).")
@click.option("--adapter", "adapter_dir", required=True, type=click.Path(file_okay=False, exists=True),
              help="The LoRA adapter (train_llm).")
@click.option("--teacher", "teacher_dir", type=click.Path(file_okay=False, exists=True),
              help="The teacher folder (download@teacher); needed when the teacher is a system.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))
def main(params_file: str, distill_dir: str, base_dir: str, adapter_dir: str, teacher_dir: str | None,
         out_dir: str) -> None:
    """Answer the maths eval questions with every system."""
    params = load_params(params_file)
    if teacher_dir is None and TEACHER in params.serve_infer.math.systems:
        raise click.UsageError("serve_infer_math with the teacher system needs --teacher")
    out = Path(out_dir)
    with StageReport("serve_infer_math", out / "report.json") as report:
        run_math(params, Path(distill_dir), base_dir, adapter_dir, teacher_dir, out, report)


if __name__ == "__main__":
    run(main)
