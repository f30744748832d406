"""Stage `serve_infer_rag`: the RAG system (`raglab.rag`). Every retriever ranks a knowledge base of the eval
split's passages for each eval question, and every generator answers from the top-k passages: the grid
retriever x generator. The router is trained (embedding) or asked (llm) and its routes of held-out CMRC and
GSM8K questions are written for the routing accuracy. Replies go through the response cache."""

from pathlib import Path

import click

from raglab.core.errors import run
from raglab.core.formats import read_jsonl, write_jsonl
from raglab.core.report import StageReport
from raglab.core.sampling import sample
from raglab.params.loader import load_params
from raglab.params.schema import Params
from raglab.params.serving import Rag
from raglab.rag.kb import read_kb
from raglab.rag.routing import MATH, RAG, ROUTER_MAX_TOKENS, route_from_reply, training_questions
from raglab.rag.system import RagSystem
from raglab.serving.cache import response_cache
from raglab.serving.client import Endpoint, Reply, Sampling
from raglab.serving.systems import ask, systems_to_ask
from raglab.serving.vllm import BASE_NAME


def routing_questions(sft_dir: Path, distill_dir: Path, gsm8k_dir: Path, split_rows: list[dict], rag: Rag,
                      report: StageReport) -> tuple[dict, dict]:
    """The router's training questions (CMRC training passages' questions, GSM8K questions outside the maths
    eval set; a seeded sample per route) and its held-out ones (the CMRC and GSM8K eval questions)."""
    math_eval = [row["question"] for row in read_jsonl(distill_dir / "eval.jsonl")]
    train = training_questions(gsm8k_dir, sft_dir / "pairs.jsonl", rag.router.max_per_route, rag.seed,
                               frozenset(math_eval))
    evaluation = {MATH: math_eval, RAG: [row["question"] for row in split_rows]}
    for route in (MATH, RAG):
        report.add_read(f"router {route} questions (train / held out)", len(train[route]))
        report.extra.setdefault("router", {})[route] = {"train": len(train[route]), "held_out": len(evaluation[route])}
    return train, evaluation


def run_rag(params: Params, sft_dir: Path, distill_dir: Path, gsm8k_dir: Path, tuned_embedder: str,
            tuned_reranker: str, base_dir: str, adapter: str, out: Path, report: StageReport) -> None:
    rag, serving = params.rag, params.serving
    router = rag.router
    if router.kind == "llm" and router.endpoint is None and BASE_NAME not in rag.generators:
        raise click.ClickException("rag.router: the llm router without an endpoint asks the base "
                                   "LLM, so rag.generators must include base")
    splits = {}
    for split in rag.splits:
        rows, kb_path = read_jsonl(sft_dir / "eval" / f"{split}.jsonl"), sft_dir / "eval" / f"{split}_kb.jsonl"
        if not rows:
            raise click.ClickException(f"build_sft wrote no eval questions for split '{split}' "
                                       "(val needs build_sft.val_size > 0)")
        splits[split] = (rows, read_kb(kb_path))
        report.add_read(f"{split} questions", len(rows))
        report.add_read(f"{split} knowledge base ({kb_path})", len(splits[split][1]))

    # the system over each split's knowledge base (each embedder loaded once); every retriever ranks to rank_depth
    ranked, systems, shared = {}, {}, None
    for split, (rows, kb) in splits.items():
        systems[split] = shared = RagSystem.build(params, kb, tuned_embedder=tuned_embedder,
                                                  tuned_reranker=tuned_reranker, shared=shared, llm=base_dir,
                                                  adapter=adapter)
        position = {text: i for i, text in enumerate(kb)}
        questions = [row["question"] for row in rows]
        for name in rag.retrievers:
            rankings = systems[split].rank(name, questions, rag.rank_depth)
            ranked[split, name] = rankings
            results = [{"id": row["id"], "question": row["question"], "gold_passage": position[row["context"]],
                        "ranked": [{"passage": j, "score": round(score, 6)} for j, score in ranking]}
                       for row, ranking in zip(rows, rankings)]
            for result, s in zip(results, systems[split].retrievers.rerank_seconds(name, len(rows))):
                result["rerank_s"] = round(s, 5)  # the time the question's reranking took
            report.add_wrote(f"{split}/retrieval/{name}.jsonl",
                             write_jsonl(out / split / "retrieval" / f"{name}.jsonl", results))
    shared.retrievers.release_llm()  # the LLM rerankers are done: their memory goes to the served generators

    # routing: train the embedding router now; the llm router is asked while its model is served
    train_q, eval_q = routing_questions(sft_dir, distill_dir, gsm8k_dir, splits[rag.splits[0]][0], rag, report)
    labels = [route for route in (MATH, RAG) for _ in eval_q[route]]
    held_out = [q for route in (MATH, RAG) for q in eval_q[route]]
    cache = response_cache()
    sampling = Sampling(rag.max_tokens, rag.temperature)

    def save_routes(predicted: list[str]) -> None:
        report.add_wrote("routing.jsonl", write_jsonl(out / "routing.jsonl", (
            {"question": q, "route": label, "predicted": p} for q, label, p in zip(held_out, labels, predicted))))

    first = systems[rag.splits[0]]

    def answer(system: RagSystem, endpoint: Endpoint, identity: str, rows: list[dict], passages: list[list[str]],
               desc: str) -> list[Reply]:
        """The generator's reply to each question from its passages; a question left without any (the reranker's
        threshold kept none) gets the system's no-passage answer and is not asked."""
        asked = [i for i, ps in enumerate(passages) if ps]
        chats = [system.generator_chat(rows[i]["question"], passages[i]) for i in asked]
        replies = dict(zip(asked, ask(endpoint, chats, sampling, serving, cache, identity, desc, keep_too_long=True)))
        return [replies[i] if i in replies else Reply(content=system.no_passage_answer(row["question"]))
                for i, row in enumerate(rows)]

    def llm_route(endpoint: Endpoint, identity: str) -> None:
        replies = ask(endpoint, first.router_chats(held_out), Sampling(ROUTER_MAX_TOKENS, 0.0), serving, cache,
                      identity, "router")
        save_routes([route_from_reply(reply.content) for reply in replies])

    if router.kind == "embedding":
        model = first.fit_router(train_q[MATH], train_q[RAG])
        model.save(out / "router", {"embedder": params.embedder.model,
                                    "train": {k: len(v) for k, v in train_q.items()}})
        save_routes(model.route(held_out))
    elif router.endpoint is not None:
        endpoint = Endpoint(router.endpoint.base_url, router.endpoint.model, router.endpoint.api_key_env)
        llm_route(endpoint, endpoint.identity)

    # generation: every generator answers (a seeded sample of) the questions from each retriever's top_k passages
    answered = {split: sample(range(len(rows)), rag.max_answers, rag.seed) for split, (rows, _) in splits.items()}
    for generator, endpoint, identity in systems_to_ask(params, rag.generators, rag.external, base_dir,
                                                        adapter, out):
        if router.kind == "llm" and router.endpoint is None and generator == BASE_NAME:
            llm_route(endpoint, identity)
        for split, (all_rows, kb) in splits.items():
            rows = [all_rows[i] for i in answered[split]]
            for name in rag.retrievers:
                passages = [[kb[j] for j, _ in ranked[split, name][i][:rag.top_k]] for i in answered[split]]
                system = f"{name}+{generator}"
                replies = answer(systems[split], endpoint, identity, rows, passages, f"{system} {split}")
                if unasked := sum(not ps for ps in passages):  # no passage above the reranker's threshold
                    report.extra.setdefault("no_passage", {})[f"{split}/{system}"] = unasked
                results = [{"id": row["id"], "question": row["question"], "gold": row["answers"],
                            "golds": row["golds"], "gold_passage": row["context"], "passages": ps,
                            "prediction": reply.content, **({"error": reply.error} if reply.too_long else {})}
                           for row, ps, reply in zip(rows, passages, replies)]
                if too_long := sum(reply.too_long for reply in replies):  # kept in the grid, scored as wrong
                    report.drop(f"{split}/{system}: prompt longer than the served context (answered empty)", too_long)
                report.add_wrote(f"{split}/{system}.jsonl", write_jsonl(out / split / f"{system}.jsonl", results))


@click.command()
@click.option("--params", "params_file", default="params.yaml", show_default=True)
@click.option("--eval", "sft_dir", required=True, type=click.Path(file_okay=False, exists=True),
              help="build_sft's output (eval splits, their knowledge bases, the training pairs).")
@click.option("--base", "base_dir", required=True, type=click.Path(file_okay=False, exists=True),
              help="The base LLM folder (download@llm).")
@click.option("--adapter", "adapter_dir", required=True, type=click.Path(file_okay=False, exists=True),
              help="The LoRA adapter (train_llm).")
@click.option("--embedder", "embedder_dir", required=True, type=click.Path(file_okay=False, exists=True),
              help="The tuned embedder (train_embed).")
@click.option("--reranker", "reranker_dir", required=True, type=click.Path(file_okay=False, exists=True),
              help="The tuned cross-encoder (train_rerank).")
@click.option("--math", "math_dir", required=True, type=click.Path(file_okay=False, exists=True),
              help="distill_cot's output (its eval questions are the router's held-out maths questions).")
@click.option("--gsm8k", "gsm8k_dir", required=True, type=click.Path(file_okay=False, exists=True),
              help="download's GSM8K folder (the router's training maths questions).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))
def main(params_file: str, sft_dir: str, base_dir: str, adapter_dir: str, embedder_dir: str, reranker_dir: str,
         math_dir: str, gsm8k_dir: str, out_dir: str) -> None:
    """Run the RAG system's grid of retrievers x generators and its router over the eval questions."""
    out = Path(out_dir)
    with StageReport("serve_infer_rag", out / "report.json") as report:
        run_rag(load_params(params_file), Path(sft_dir), Path(math_dir), Path(gsm8k_dir), embedder_dir, reranker_dir,
                base_dir, adapter_dir, out, report)


if __name__ == "__main__":
    run(main)
