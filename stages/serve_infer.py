"""Stage `serve_infer`: run every system under test over the eval sets.

Three parts (`serve_infer@retrieval`, `@generation`, `@math` in dvc.yaml), so that a change on one
track never re-runs another:

- retrieval: each embedder system (`base` = the untuned model, `tuned` = train_embed's output)
  encodes the knowledge base and the queries of each eval split; faiss returns the top-k passages.
- generation: vLLM's OpenAI-compatible server (127.0.0.1, free port) serves the base LLM as `base`
  and base + LoRA adapter as `sft` (`serving.adapter`: one server with vLLM's LoRA support, or a
  peft-merged copy on a CPU); build_sft's eval splits go through the `openai` client with the
  prompt template and system prompt the model was trained with; external OpenAI-compatible systems
  from the params are asked the same way.
- math: distill_cot's GSM8K eval questions, with the distillation prompt, to `base`, `sft` (their
  assistant turn starts with `think_prefix`), the `teacher` (served or external, as it was asked
  during distillation) and external systems.
- rag: the RAG system (`raglab.rag`): every retriever ranks a knowledge base of the eval split's
  passages for each eval question, and every generator answers from the top-k passages, i.e. the
  grid retriever x generator. The router is trained (embedding) or asked (llm) and its routes of
  held-out CMRC and GSM8K questions are written for the routing accuracy.

Replies go through the response cache (`RAGLAB_CACHE`), so scoring a run again asks nothing twice.
Servers are always shut down.
"""

import json
from pathlib import Path

import click

from raglab.client import Endpoint, Request, ResponseCache, Sampling, chat_many, raise_failures
from raglab.errors import run
from raglab.formats import folder_fingerprint, read_jsonl, read_lines, write_jsonl
from raglab.models import cache_dir
from raglab.params import load_params, section
from raglab.prompts import chat_messages, render, render_question
from raglab.rag import Retrievers, rag_messages, read_kb
from raglab.report import StageReport
from raglab.retrieval import EmbedderConfig, load_embedder, retrieve
from raglab.routing import (
    MATH,
    RAG,
    ROUTER_MAX_TOKENS,
    EmbeddingRouter,
    balanced_sample,
    route_from_reply,
    router_messages,
)
from raglab.serving import BASE_NAME, SFT_NAME, local_endpoints
from raglab.sft import sample
from raglab.teacher import teacher_endpoint

TEACHER = "teacher"


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


def ask(endpoint: Endpoint, messages: list[list[dict]], sampling: Sampling, serving: dict, cache: ResponseCache,
        identity: str, desc: str):
    replies = chat_many(endpoint, [Request(m) for m in messages], sampling, concurrency=serving["concurrency"],
                        timeout_s=serving["timeout_s"], max_retries=serving["max_retries"], cache=cache,
                        identity=identity, desc=desc)
    raise_failures(replies, endpoint)
    return replies


def systems_to_ask(params: dict, part: dict, base_dir: str, adapter_dir: str, log_dir: Path):
    """(name, endpoint, cache identity) for the local systems (servers running while used), then external ones."""
    llm, serving = params["llm"], params["serving"]
    local = [s for s in part["systems"] if s != TEACHER]
    weights = {"base": folder_fingerprint(base_dir, skip=("source.json",))}
    if SFT_NAME in local:
        weights["sft"] = folder_fingerprint(adapter_dir)
    for system, endpoint in local_endpoints(local, base_dir, adapter_dir, serving,
                                            trust_remote_code=llm["trust_remote_code"], log_dir=log_dir):
        # what answers: the weights (base, and the adapter for sft) and how they are served, not a port
        identity = json.dumps([system, weights["base"], weights.get(system if system == SFT_NAME else "", ""),
                               serving["adapter"], serving["dtype"]])
        yield system, endpoint, identity
    for ext in part["external"]:
        endpoint = Endpoint(ext["base_url"], ext["model"], ext.get("api_key_env"))
        yield ext["name"], endpoint, f"{ext['base_url']}|{ext['model']}"


def run_generation(params: dict, sft_dir: Path, base_dir: str, adapter: str, out: Path, report: StageReport) -> None:
    g, prompt, serving = params["serve_infer"]["generation"], params["prompt"], params["serving"]
    splits = {}
    for split in g["splits"]:
        path = sft_dir / "eval" / f"{split}.jsonl"
        if not path.is_file():
            raise click.ClickException(f"build_sft wrote no eval split '{split}' ({path} is missing; "
                                       "val needs build_sft.val_size > 0)")
        splits[split] = read_jsonl(path)
        report.add_read(str(path), len(splits[split]))
    sampling = Sampling(g["max_tokens"], g["temperature"])
    cache = ResponseCache(cache_dir() / "responses.sqlite")
    for system, endpoint, identity in systems_to_ask(params, g, base_dir, adapter, out):
        for split, rows in splits.items():
            chats = [chat_messages(prompt["system"], render(prompt["template"], r["context"], r["question"]))
                     for r in rows]
            replies = ask(endpoint, chats, sampling, serving, cache, identity, f"{system} {split}")
            results = [{"id": r["id"], "question": r["question"], "context": r["context"], "gold": r["answers"],
                        "prediction": reply.content} for r, reply in zip(rows, replies)]
            report.add_wrote(f"{split}/{system}.jsonl", write_jsonl(out / split / f"{system}.jsonl", results))


def run_math(params: dict, distill_dir: Path, base_dir: str, adapter: str, teacher_dir: str, out: Path,
             report: StageReport) -> None:
    m, d, serving = params["serve_infer"]["math"], params["distill_cot"], params["serving"]
    path = distill_dir / "eval.jsonl"
    rows = read_jsonl(path)
    report.add_read(str(path), len(rows))
    system_prompt = params["prompt"]["system"]
    questions = [chat_messages(system_prompt, render_question(d["prompt"], r["question"])) for r in rows]
    cache = ResponseCache(cache_dir() / "responses.sqlite")

    def save(system: str, replies) -> None:
        results = [{"question": r["question"], "gold": r["gold"], "reasoning": reply.reasoning,
                    "prediction": reply.content, "completion_tokens": reply.completion_tokens}
                   for r, reply in zip(rows, replies)]
        report.add_wrote(f"{system}.jsonl", write_jsonl(out / f"{system}.jsonl", results))

    # the local students continue an assistant turn that starts with the think prefix
    student = Sampling(m["max_tokens"], m["temperature"],
                       extra_body={"continue_final_message": True, "add_generation_prompt": False})
    prefixed = [q + [{"role": "assistant", "content": m["think_prefix"]}] for q in questions]
    plain = Sampling(m["max_tokens"], m["temperature"])
    for system, endpoint, identity in systems_to_ask(params, m, base_dir, adapter, out):
        local = system in ("base", SFT_NAME)
        replies = ask(endpoint, prefixed if local else questions, student if local else plain, serving, cache,
                      identity, system)
        if local:  # the prefix is part of the answer
            for reply in replies:
                reply.content = m["think_prefix"] + reply.content
        save(system, replies)
    if TEACHER in m["systems"]:
        with teacher_endpoint(d["teacher"], teacher_dir, serving, out) as (endpoint, identity):
            save(TEACHER, ask(endpoint, questions, Sampling(m["max_tokens"], m["temperature"]), serving, cache,
                              identity, TEACHER))


def routing_questions(sft_dir: Path, distill_dir: Path, gsm8k_dir: Path, split_rows: list[dict], rag: dict,
                      report: StageReport) -> tuple[dict, dict]:
    """The router's training questions (CMRC training passages' questions, GSM8K questions outside the maths
    eval set; a seeded sample per route) and its held-out ones (the CMRC and GSM8K eval questions)."""
    math_eval = [row["question"] for row in read_jsonl(distill_dir / "eval.jsonl")]
    held_out = set(math_eval)
    gsm8k = [row["question"] for f in sorted(gsm8k_dir.glob("*.jsonl")) for row in read_jsonl(f)]
    cmrc = [row["question"] for row in read_jsonl(sft_dir / "pairs.jsonl")]
    n, seed = rag["router"]["max_per_route"], rag["seed"]
    train = {MATH: balanced_sample([q for q in gsm8k if q not in held_out], n, seed),
             RAG: balanced_sample(cmrc, n, seed)}
    evaluation = {MATH: math_eval, RAG: [row["question"] for row in split_rows]}
    for route in (MATH, RAG):
        report.add_read(f"router {route} questions (train / held out)", len(train[route]))
        report.extra.setdefault("router", {})[route] = {"train": len(train[route]), "held_out": len(evaluation[route])}
    return train, evaluation


def run_rag(params: dict, sft_dir: Path, distill_dir: Path, gsm8k_dir: Path, tuned_embedder: str, base_dir: str,
            adapter: str, out: Path, report: StageReport) -> None:
    rag, prompt, serving = params["serve_infer"]["rag"], params["prompt"], params["serving"]
    router = rag["router"]
    if router["kind"] == "llm" and router["endpoint"] is None and BASE_NAME not in rag["generators"]:
        raise click.ClickException("serve_infer.rag.router: the llm router without an endpoint asks the base "
                                   "LLM, so serve_infer.rag.generators must include base")
    splits = {}
    for split in rag["splits"]:
        rows, kb_path = read_jsonl(sft_dir / "eval" / f"{split}.jsonl"), sft_dir / "eval" / f"{split}_kb.jsonl"
        if not rows:
            raise click.ClickException(f"build_sft wrote no eval questions for split '{split}' "
                                       "(val needs build_sft.val_size > 0)")
        splits[split] = (rows, read_kb(kb_path))
        report.add_read(f"{split} questions", len(rows))
        report.add_read(f"{split} knowledge base ({kb_path})", len(splits[split][1]))

    # retrieval: every retriever over every split, ranked to rank_depth
    ranked, retrievers = {}, None
    for split, (rows, kb) in splits.items():
        retrievers = Retrievers(kb, params, tuned_embedder, shared=retrievers)  # each embedder loaded once
        position = {text: i for i, text in enumerate(kb)}
        questions = [row["question"] for row in rows]
        for name in rag["retrievers"]:
            rankings = retrievers.search(name, questions, rag["rank_depth"])
            ranked[split, name] = rankings
            results = [{"id": row["id"], "question": row["question"], "gold_passage": position[row["context"]],
                        "ranked": [{"passage": j, "score": round(score, 6)} for j, score in ranking]}
                       for row, ranking in zip(rows, rankings)]
            report.add_wrote(f"{split}/retrieval/{name}.jsonl",
                             write_jsonl(out / split / "retrieval" / f"{name}.jsonl", results))

    # routing: train the embedding router now; the llm router is asked while its model is served
    train_q, eval_q = routing_questions(sft_dir, distill_dir, gsm8k_dir, splits[rag["splits"][0]][0], rag, report)
    labels = [route for route in (MATH, RAG) for _ in eval_q[route]]
    held_out = [q for route in (MATH, RAG) for q in eval_q[route]]
    cache = ResponseCache(cache_dir() / "responses.sqlite")
    sampling = Sampling(rag["max_tokens"], rag["temperature"])

    def save_routes(predicted: list[str]) -> None:
        report.add_wrote("routing.jsonl", write_jsonl(out / "routing.jsonl", (
            {"question": q, "route": label, "predicted": p} for q, label, p in zip(held_out, labels, predicted))))

    def llm_route(endpoint: Endpoint, identity: str) -> None:
        chats = [router_messages(router["prompt"], prompt["system"], q) for q in held_out]
        replies = ask(endpoint, chats, Sampling(ROUTER_MAX_TOKENS, 0.0), serving, cache, identity, "router")
        save_routes([route_from_reply(reply.content) for reply in replies])

    if router["kind"] == "embedding":
        model = EmbeddingRouter.fit(retrievers.embedder("base"), train_q[MATH], train_q[RAG], rag["seed"])
        model.save(out / "router", {"embedder": params["embedder"]["model"],
                                    "train": {k: len(v) for k, v in train_q.items()}})
        save_routes(model.route(held_out))
    elif router["endpoint"] is not None:
        ep = router["endpoint"]
        llm_route(Endpoint(ep["base_url"], ep["model"], ep.get("api_key_env")), f"{ep['base_url']}|{ep['model']}")

    # generation: every generator answers (a seeded sample of) the questions from each retriever's top_k passages
    answered = {split: sample(range(len(rows)), rag["max_answers"], rag["seed"]) for split, (rows, _) in splits.items()}
    for generator, endpoint, identity in systems_to_ask(params, {**rag, "systems": rag["generators"]}, base_dir,
                                                        adapter, out):
        if router["kind"] == "llm" and router["endpoint"] is None and generator == BASE_NAME:
            llm_route(endpoint, identity)
        for split, (all_rows, kb) in splits.items():
            rows = [all_rows[i] for i in answered[split]]
            for name in rag["retrievers"]:
                passages = [[kb[j] for j, _ in ranked[split, name][i][:rag["top_k"]]] for i in answered[split]]
                chats = [rag_messages(prompt, row["question"], ps) for row, ps in zip(rows, passages)]
                replies = ask(endpoint, chats, sampling, serving, cache, identity, f"{name}+{generator} {split}")
                results = [{"id": row["id"], "question": row["question"], "gold": row["answers"],
                            "gold_passage": row["context"], "passages": ps, "prediction": reply.content}
                           for row, ps, reply in zip(rows, passages, replies)]
                system = f"{name}+{generator}"
                report.add_wrote(f"{split}/{system}.jsonl", write_jsonl(out / split / f"{system}.jsonl", results))


@click.command()
@click.argument("part", type=click.Choice(["retrieval", "generation", "math", "rag"]))
@click.option("--params", "params_file", default="params.yaml", show_default=True)
@click.option("--eval", "eval_path", required=True, type=click.Path(exists=True),
              help="retrieval: build_embed_negatives' output; generation: build_sft's; math: distill_cot's.")
@click.option("--model", "model_dir", required=True, type=click.Path(file_okay=False, exists=True),
              help="retrieval: the tuned embedder; generation, math: the LoRA adapter.")
@click.option("--base", "base_dir", type=click.Path(file_okay=False, exists=True),
              help="generation, math: the base LLM folder (download@llm).")
@click.option("--teacher", "teacher_dir", type=click.Path(file_okay=False, exists=True),
              help="math: the teacher folder (download@teacher).")
@click.option("--embedder", "embedder_dir", type=click.Path(file_okay=False, exists=True),
              help="rag: the tuned embedder (train_embed).")
@click.option("--math", "math_dir", type=click.Path(file_okay=False, exists=True),
              help="rag: distill_cot's output (its eval questions are the router's held-out maths questions).")
@click.option("--gsm8k", "gsm8k_dir", type=click.Path(file_okay=False, exists=True),
              help="rag: download's GSM8K folder (the router's training maths questions).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))
def main(part: str, params_file: str, eval_path: str, model_dir: str, base_dir: str | None, teacher_dir: str | None,
         embedder_dir: str | None, math_dir: str | None, gsm8k_dir: str | None, out_dir: str) -> None:
    """Run the PART systems over the eval set; write their outputs to --out."""
    params = load_params(params_file)
    groups = {"retrieval": ("serve_infer", "embedder"), "generation": ("serve_infer", "llm", "prompt", "serving"),
              "math": ("serve_infer", "llm", "prompt", "serving", "distill_cot"),
              "rag": ("serve_infer", "llm", "prompt", "serving", "embedder")}[part]
    for group in groups:
        section(params, group, params_file)
    if part != "retrieval" and base_dir is None:
        raise click.UsageError(f"serve_infer {part} needs --base (the base LLM folder)")
    out = Path(out_dir)
    with StageReport(f"serve_infer@{part}", out / "report.json") as report:
        if part == "retrieval":
            run_retrieval(params, Path(eval_path), model_dir, out, report)
        elif part == "generation":
            run_generation(params, Path(eval_path), base_dir, model_dir, out, report)
        elif part == "rag":
            if None in (embedder_dir, math_dir, gsm8k_dir):
                raise click.UsageError("serve_infer rag needs --embedder, --math and --gsm8k")
            run_rag(params, Path(eval_path), Path(math_dir), Path(gsm8k_dir), embedder_dir, base_dir, model_dir, out,
                    report)
        else:
            if teacher_dir is None and TEACHER in params["serve_infer"]["math"]["systems"]:
                raise click.UsageError("serve_infer math with the teacher system needs --teacher")
            run_math(params, Path(eval_path), base_dir, model_dir, teacher_dir, out, report)


if __name__ == "__main__":
    run(main)
