"""The general RAG metrics: ragas' answer relevancy and faithfulness, judged by an LLM.

The judge is any OpenAI-compatible chat endpoint (params ``score.rag.judge``: ``endpoint``), or the
base LLM served here with vLLM (``served``: a smoke test of the judging path, not a judge), or none
(the metrics are skipped and the metrics file says so). ragas asks through an ``openai`` client
whose HTTP transport goes through the response cache, so scoring the same answers again asks the
judge nothing. Answer relevancy's embeddings are the local cosine embedder (``score.generation.
cosine_embedder``, as ``raglab.evaluation.answers`` loads it), not an endpoint.

A judge reply ragas cannot parse (after no re-ask: ``max_retries=0``) leaves that verdict empty
(None), counted per error type in the stage report; the mean is over the verdicts given, and
``<metric>_judged`` says what share that was. An empty answer, and the system's answer that no passage answers
the question (the reranker's threshold kept none: nothing to be faithful to), are not judged either.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
from collections import Counter
from pathlib import Path

from raglab.core.report import StageReport
from raglab.evaluation.answers import TextEncoder, load_cosine_embedder
from raglab.params.serving import CosineEmbedder, Judge, Serving
from raglab.serving.cache import cached_async_client, response_cache
from raglab.serving.types import Endpoint

log = logging.getLogger("raglab")

METRICS = ("answer_relevancy", "faithfulness")
NOTES = {
    "none": "none: answer relevancy and faithfulness not computed (score.rag.judge.kind)",
    "served": "served: the base LLM judged answer relevancy and faithfulness; with the demo's tiny random model "
              "these values are meaningless",
}


def ragas_embeddings(encoder: TextEncoder):
    """``encoder`` as ragas' embeddings (answer relevancy compares the question with questions generated back)."""
    from ragas.embeddings.base import BaseRagasEmbedding

    class Embeddings(BaseRagasEmbedding):
        def embed_text(self, text: str, **kwargs) -> list[float]:
            return self.embed_texts([text])[0]

        def embed_texts(self, texts: list[str], **kwargs) -> list[list[float]]:
            return encoder.encode(list(texts)).tolist()

        async def aembed_text(self, text: str, **kwargs) -> list[float]:
            return self.embed_text(text)

        async def aembed_texts(self, texts: list[str], **kwargs) -> list[list[float]]:
            return self.embed_texts(texts)

    return Embeddings()


@contextlib.contextmanager
def judge_endpoint(judge: Judge, judge_model: str | None, serving: Serving, log_dir: Path):
    """``(endpoint, identity)`` of the judge; a served judge starts on its first uncached request."""
    if judge.kind == "endpoint":
        endpoint = Endpoint(judge.base_url, judge.model, judge.api_key_env)
        yield endpoint, f"judge|{endpoint.identity}"
        return
    if judge_model is None or not Path(judge_model).is_dir():
        raise ValueError(f"score.rag.judge.kind served needs the base LLM folder (--judge-model), got {judge_model}")
    from raglab.serving.systems import served_endpoint

    with served_endpoint("judge", judge_model, serving, False, log_dir) as served:
        yield served


async def _judge(llm, embeddings, rows: list[dict], strictness: int, concurrency: int, errors: Counter) -> list[dict]:
    from instructor.core import InstructorError
    from ragas.metrics.collections import AnswerRelevancy, Faithfulness

    relevancy = AnswerRelevancy(llm=llm, embeddings=embeddings, strictness=strictness)
    faithfulness = Faithfulness(llm=llm)
    semaphore = asyncio.Semaphore(concurrency)

    async def verdict(metric, **kwargs) -> float | None:
        async with semaphore:
            try:
                value = (await metric.ascore(**kwargs)).value
            except InstructorError as e:  # unparseable after no re-ask, cut off, or the API failed
                errors[type(e).__name__] += 1
                return None
        if value is None or math.isnan(value):
            errors["no_value"] += 1  # e.g. no statement found in the answer
            return None
        return round(float(value), 5)

    async def one(row: dict) -> dict:
        question, answer = row["question"], row["prediction"]
        if not answer.strip():
            errors["empty_answer"] += 1
            return dict.fromkeys(METRICS)
        if not row["passages"]:  # the system's no-passage answer (no passage passed the reranker's threshold)
            errors["no_passage"] += 1
            return dict.fromkeys(METRICS)
        rel, faith = await asyncio.gather(
            verdict(relevancy, user_input=question, response=answer),
            verdict(faithfulness, user_input=question, response=answer, retrieved_contexts=row["passages"]))
        return {"answer_relevancy": rel, "faithfulness": faith}

    return list(await asyncio.gather(*(one(r) for r in rows)))


def judge_scores(judge: Judge, judge_model: str | None, serving: Serving, embedder_params: CosineEmbedder, rows: list[dict],
                 log_dir: Path, report: StageReport) -> list[dict]:
    """Per row ``{"answer_relevancy": x, "faithfulness": y}`` (None for a verdict the judge did not give);
    empty dicts when no judge is set."""
    if judge.kind == "none":
        return [{} for _ in rows]
    os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")  # ragas posts telemetry on every call otherwise
    import instructor
    from ragas.llms.base import InstructorLLM

    logging.getLogger("instructor").setLevel(logging.CRITICAL)  # a failed parse is counted, not logged 5 times
    log_dir.mkdir(parents=True, exist_ok=True)
    cache = response_cache()
    errors: Counter = Counter()

    async def run(endpoint, identity: str) -> list[dict]:
        client, transport = cached_async_client(endpoint, cache, identity, timeout_s=serving.timeout_s,
                                                max_retries=serving.max_retries)
        # JSON_SCHEMA constrains a served model's output to the verdict's schema (vLLM structured outputs);
        # an API with a JSON mode only (json_object) takes judge.mode json
        mode = {"json": instructor.Mode.JSON, "json_schema": instructor.Mode.JSON_SCHEMA}[judge.mode]
        llm = InstructorLLM(client=instructor.from_openai(client, mode=mode), model=endpoint.model,
                            provider="openai", max_tokens=judge.max_tokens, temperature=0.0, max_retries=0)
        embeddings = ragas_embeddings(load_cosine_embedder(embedder_params))
        try:
            scores = await _judge(llm, embeddings, rows, judge.strictness, serving.concurrency, errors)
        finally:
            await client.close()
        log.info("judge: %d requests answered from the cache, %d asked", transport.hits, transport.misses)
        return scores

    try:
        with judge_endpoint(judge, judge_model, serving, log_dir) as (endpoint, identity):
            scores = asyncio.run(run(endpoint, identity))
    finally:
        cache.close()
    if errors:  # verdicts not given, by cause (the rows themselves are kept and scored otherwise)
        report.extra["judge_missing_verdicts"] = dict(errors)
    return scores
