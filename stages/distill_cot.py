"""Stage `distill_cot`: a teacher solves GSM8K training questions step by step; verified solutions are kept.

Writes to --out: `train.jsonl` (Alpaca SFT records of the kept solutions, with the reasoning),
`train_answer_only.jsonl` (the same without it), both also in the messages form (`*_messages.jsonl`), `kept.jsonl` (every kept reply with its reasoning, round and tokens),
`failed.jsonl` (questions still unsolved after the last round, with every attempt), `eval.jsonl`
(the maths eval questions: `question`, `gold`) and `report.json` (kept, failed by reason, rounds,
requests, tokens, wall time, estimated cost). Replies come from the response cache when it has them
(`RAGLAB_CACHE`), so an interrupted or repeated run asks the teacher only for what is missing.
"""

import logging
import time
from pathlib import Path

import click

from raglab.core.errors import run
from raglab.core.formats import write_jsonl
from raglab.core.report import StageReport
from raglab.core.sampling import sample, seeded_prefix
from raglab.data.sources import read_downloaded
from raglab.generator.distill import (
    carve,
    distill,
    gsm8k_questions,
    question_messages,
    training_record,
    usage,
)
from raglab.generator.teacher import teacher_endpoint
from raglab.params.loader import load_params
from raglab.serving.cache import import_replies, response_cache
from raglab.serving.client import Sampling, chat_many

log = logging.getLogger("raglab")


@click.command()
@click.option("--params", "params_file", default="params.yaml", show_default=True)
@click.option("--source", "source_dir", default="data/raw/gsm8k", show_default=True, type=click.Path(file_okay=False))
@click.option("--teacher", "teacher_dir", default="models/base/teacher", show_default=True,
              type=click.Path(file_okay=False, exists=True), help="download@teacher's folder.")
@click.option("--out", "out_dir", default="data/distill", show_default=True, type=click.Path(file_okay=False))
def main(params_file: str, source_dir: str, teacher_dir: str, out_dir: str) -> None:
    params = load_params(params_file)
    p, serving = params.distill_cot, params.serving
    system = params.prompt.system
    out = Path(out_dir)
    with StageReport("distill_cot", out / "report.json") as report:
        def load(split):
            return gsm8k_questions(read_downloaded(source_dir, "gsm8k", split, "distill_cot", report), split, report)

        if p.train_split == p.eval_split:
            train, evaluation = carve(load(p.train_split), p.eval_size, p.seed)
        else:
            train, evaluation = load(p.train_split), load(p.eval_split)
            eval_texts = {q.question for q in evaluation}
            overlap = [q for q in train if q.question in eval_texts]
            report.drop("train_question_also_in_eval", len(overlap))
            train = [q for q in train if q.question not in eval_texts]
        if not train:
            raise click.ClickException(f"distill_cot: no {p.train_split} question of {source_dir} has a question "
                                       "and a numeric '#### ' answer")
        train = seeded_prefix(train, p.max_questions, p.seed)
        evaluation = sample(evaluation, p.max_eval, p.seed)
        report.add_wrote("eval.jsonl", write_jsonl(out / "eval.jsonl", (
            {"id": q.id, "question": q.question, "gold": q.gold} for q in evaluation)))

        sampling = Sampling(p.max_tokens, p.temperature)
        cache = response_cache()
        started = time.perf_counter()
        with teacher_endpoint(p.teacher, teacher_dir, serving, out) as (endpoint, identity):
            for file in sorted(Path(p.replies).glob("*.jsonl.gz")):  # this teacher's exported replies first
                counts = import_replies(cache, file, identity)
                report.extra.setdefault("imported_replies", {})[file.name] = counts
                report.add_read(f"{p.replies}/{file.name}", counts["added"] + counts["present"])
            def ask(requests, round_no):
                replies = chat_many(endpoint, requests, sampling, concurrency=serving.concurrency,
                                    timeout_s=serving.timeout_s, max_retries=serving.max_retries,
                                    cache=cache, identity=identity, desc=f"round {round_no + 1}: {len(requests)} questions")
                log.info("round %d: %d asked, %d from the cache", round_no + 1, len(requests),
                         sum(r.cached for r in replies))
                return replies

            outcome = distill(train, question_messages(p.prompt, system), ask, p.max_rounds, p.seed)
        by_id = {q.id: q for q in train}
        kept = [(by_id[i], *v) for i, v in outcome.kept.items()]
        for variant, name in [("cot", "train"), ("answer_only", "train_answer_only")]:
            records = [training_record(q, reply, answer, p.prompt, system, variant) for q, reply, _, answer in kept]
            report.add_wrote(f"{name}.jsonl", write_jsonl(out / f"{name}.jsonl", records))
            write_jsonl(out / f"{name}_messages.jsonl", (
                {"messages": [{"role": "system", "content": r["system"]}, {"role": "user", "content": r["instruction"]},
                              {"role": "assistant", "content": r["output"]}]} for r in records))
        report.add_wrote("kept.jsonl", write_jsonl(out / "kept.jsonl", (
            {"id": q.id, "question": q.question, "gold": q.gold, "answer": answer, "round": round_no,
             "reasoning": reply.reasoning, "content": reply.content,
             "prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens}
            for q, reply, round_no, answer in kept)))
        failed = [q for q in train if q.id not in outcome.kept]
        report.add_wrote("failed.jsonl", write_jsonl(out / "failed.jsonl", (
            {"id": q.id, "question": q.question, "gold": q.gold, "attempts": outcome.attempts[q.id]} for q in failed)))

        last = {q.id: outcome.attempts[q.id][-1]["status"] for q in failed if outcome.attempts[q.id]}
        report.extra.update({
            "teacher": p.teacher.model,
            "questions": len(train),
            "kept": len(kept),
            "kept_share": round(len(kept) / len(train), 4) if train else None,
            "kept_in_round": {r + 1: sum(1 for *_, rn, _ in kept if rn == r) for r in range(outcome.rounds_used)},
            "failed_by_last_reason": {s: list(last.values()).count(s) for s in sorted(set(last.values()))},
            "attempts_by_status": dict(outcome.statuses),
            "rounds_used": outcome.rounds_used,
            "usage": usage(outcome.replies, p.price_per_million_tokens),
            "teacher_seconds": round(time.perf_counter() - started, 1),
        })
        if not kept:
            log.warning("distill_cot kept no solution out of %d questions: train.jsonl is empty, and train_llm's "
                        "'math' source adds nothing", len(train))


if __name__ == "__main__":
    run(main)
