"""Stage `write_questions`: a teacher writes the questions each chunk answers; the filters keep the good ones.

The teacher is distill_cot's (a model served here, or an OpenAI-compatible endpoint), with its machinery: the
exported replies in `own.questions.replies` are added to the response cache first, every reply is committed to
the cache as it arrives (a killed run asks again only for what is missing), and requests go out concurrently.
Writes to --out `pairs.jsonl` (the kept questions as `question`, `context`, `answer`, `chunk_id`, `source`,
`page`: the rows build_embed_negatives reads; `llamaindex.json`, the same in LlamaIndex's
EmbeddingQAFinetuneDataset format), `questions.jsonl` (every parsed question with its status),
`replies.jsonl` (each chunk's raw reply), `sft.jsonl` / `sft_messages.jsonl` (with `own.questions.answers`: each
kept question with its answer as an SFT record in the prompt template, chunk + question -> answer: train_llm's
`own` source; empty otherwise) and `report.json` (questions kept and dropped by filter, chunks without a question
and why, requests, tokens, teacher seconds).
"""

import logging
import time
from pathlib import Path

import click

from raglab.core.errors import run
from raglab.core.formats import read_jsonl, write_jsonl
from raglab.core.report import StageReport
from raglab.core.sampling import seeded_order
from raglab.data.chunks import Chunk
from raglab.data.pairs import Pair, to_llamaindex, write_llamaindex
from raglab.generator.distill import usage
from raglab.generator.questions import counts, drop_near_duplicates, parse_all, requests, round_trip
from raglab.generator.sft import RCExample, alpaca_record, messages_record
from raglab.generator.teacher import teacher_endpoint
from raglab.params.loader import load_params
from raglab.retriever.search import DenseIndex, EmbedderConfig, encode_passages, encode_queries, load_embedder
from raglab.serving.cache import import_replies, response_cache
from raglab.serving.client import Sampling, chat_many

log = logging.getLogger("raglab")


@click.command()
@click.option("--params", "params_file", default="params.yaml", show_default=True)
@click.option("--chunks", "chunks_file", default="data/own/chunks/chunks.jsonl", show_default=True,
              type=click.Path(dir_okay=False, exists=True))
@click.option("--teacher", "teacher_dir", default="models/base/teacher", show_default=True,
              type=click.Path(file_okay=False, exists=True), help="download@teacher's folder.")
@click.option("--out", "out_dir", default="data/own/questions", show_default=True, type=click.Path(file_okay=False))
def main(params_file: str, chunks_file: str, teacher_dir: str, out_dir: str) -> None:
    params = load_params(params_file)
    q, serving = params.own.questions, params.serving
    out = Path(out_dir)
    with StageReport("write_questions", out / "report.json") as report:
        corpus = [Chunk(**row) for row in read_jsonl(chunks_file)]
        report.add_read(chunks_file, len(corpus))
        # asked in the seeded order (results kept in the corpus' order): what a killed run leaves in the cache is a
        # seeded prefix, so max_chunks set to it reuses every reply, and a larger one asks only for the rest
        order = seeded_order(len(corpus), q.seed)[:q.max_chunks]
        chunks = [corpus[i] for i in sorted(order)]
        asking = [corpus[i] for i in order]
        report.drop("chunks_not_sampled", len(corpus) - len(chunks))
        prompts = q.prompts_with_answers if q.answers else q.prompts
        asked = requests(asking, prompts, q.per_chunk, params.prompt.system, q.seed)

        replies, started = [], time.perf_counter()
        if asked:
            cache = response_cache()
            with teacher_endpoint(params.distill_cot.teacher, teacher_dir, serving, out) as (endpoint, identity):
                for file in sorted(Path(q.replies).glob("*.jsonl.gz")):  # this teacher's exported replies first
                    imported = import_replies(cache, file, identity)
                    report.extra.setdefault("imported_replies", {})[file.name] = imported
                    report.add_read(f"{q.replies}/{file.name}", imported["added"] + imported["present"])
                answers = chat_many(endpoint, asked, Sampling(q.max_tokens, q.temperature),
                                    concurrency=serving.concurrency, timeout_s=serving.timeout_s,
                                    max_retries=serving.max_retries, cache=cache, identity=identity,
                                    desc=f"questions for {len(asked)} chunks")
            by_id = {c.id: reply for c, reply in zip(asking, answers)}
            replies = [by_id[c.id] for c in chunks]
            log.info("%d chunks asked, %d replies from the cache", len(asked), sum(r.cached for r in replies))
        teacher_seconds = time.perf_counter() - started

        outcome = parse_all(chunks, replies, q.per_chunk, q.answers, q.drop_self_references)
        kept = [c for c in outcome.candidates if c.status == "kept"]
        if q.round_trip_top_k and kept:
            embedder = load_embedder(EmbedderConfig.of(params.embedder))
            index = DenseIndex(encode_passages(embedder, [c.text for c in corpus]))
            ranked = index.rank(encode_queries(embedder, [c.question for c in kept]), q.round_trip_top_k)
            round_trip(kept, [[corpus[j].id for j, _ in r] for r in ranked], q.round_trip_top_k)
        drop_near_duplicates(outcome.candidates, q.dedup_threshold)

        tally = counts(outcome)
        for status, n in tally.items():
            if status != "kept":
                report.drop(status, n)
        pairs = [c.row() for c in outcome.candidates if c.status == "kept"]
        report.add_wrote("pairs.jsonl", write_jsonl(out / "pairs.jsonl", (
            {k: v for k, v in row.items() if k != "status"} for row in pairs)))
        report.add_wrote("questions.jsonl", write_jsonl(out / "questions.jsonl", (
            c.row() | {"context": None} for c in outcome.candidates)))
        write_llamaindex(out / "llamaindex.json", *to_llamaindex(
            Pair(row["question"], row["context"], row["chunk_id"], row["answer"]) for row in pairs))
        answered = [RCExample(f"{row['chunk_id']}-{i}", row["context"], row["question"], row["answer"])
                    for i, row in enumerate(pairs) if row["answer"]]
        template, system = params.prompt.template, params.prompt.system
        report.add_wrote("sft.jsonl", write_jsonl(out / "sft.jsonl", (alpaca_record(ex, template, system)
                                                                     for ex in answered)))
        write_jsonl(out / "sft_messages.jsonl", (messages_record(ex, template, system) for ex in answered))
        report.add_wrote("replies.jsonl", write_jsonl(out / "replies.jsonl", (
            {"chunk_id": cid, "reply": text} for cid, text in outcome.replies.items())))
        report.extra.update({
            "teacher": params.distill_cot.teacher.model,
            "chunks_asked": len(asked),
            "chunks_with_a_kept_question": len({row["chunk_id"] for row in pairs}),
            "questions": tally,
            "usage": usage(replies, params.distill_cot.price_per_million_tokens),
            "teacher_seconds": round(teacher_seconds, 1),
        })
        if asked and not pairs:
            log.warning("write_questions kept no question out of %d chunks: see %s", len(asked),
                        out / "questions.jsonl")


if __name__ == "__main__":
    run(main)
