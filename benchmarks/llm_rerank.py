"""Measure an LLM reranker on the local LLM: a first stage's top K passages per query, scored by the LLM, then
hit@1 / hit@5 / MRR@10 of every candidate count and first-stage weight asked for, and the seconds per query.

Reads question/context pairs (a build_embed_negatives split folder with eval.jsonl and kb.txt; build_sft's eval
split such as data/sft/eval/test.jsonl with its knowledge base test_kb.jsonl beside it, the RAG system's questions;
or a CSV with ``question`` and ``context`` columns such as the mirror's Financial-QA-10k.csv), ranks the knowledge
base with the first stage (a retriever of ``raglab.retriever.systems``: bm25, base, tuned with --tuned-embedder, or
hybrid of ``rag.hybrid``), scores each query's top K with the LLM (``rerank.llm`` of the params; the kind, batch
size and precision given here) and writes one line per query to --out: its candidates, their first-stage order and
the LLM's scores, the seconds the LLM took and the engine (``--vllm``: a vLLM server started on the LLM for the run
scores through its prompt logprobs, as ``rerank.llm.endpoint`` does; else transformers in this process). A run that
stops resumes from --out, and the figures are computed from it, so that the choices (how many candidates, which
first-stage weight) cost nothing more: make them on a validation split (build_embed_negatives.val_size), then apply
them to the test split with --against to compare with another system's per-query hits (a score_retrieval test.jsonl)
by a paired bootstrap clustered by gold passage. The machine the times were taken on is printed (CPU model, cores,
bf16 flags, whether other jobs shared the cores while this run scored, torch threads).

    python benchmarks/llm_rerank.py --llm models/base/llm --eval data/embed/val --first-stage hybrid \
        --candidates 10 --keep 5,10 --weights 0,0.5,1 --out val.jsonl
    python benchmarks/llm_rerank.py --llm models/base/llm --eval data/embed/test --first-stage hybrid \
        --keep 10 --weights 0.5 --out test.jsonl --against results/real-cpu-retriever/score/retrieval/test.jsonl:tuned
    python benchmarks/llm_rerank.py --llm $TINY_LLM_DIR --eval data/demo-mirror/financial-qa-10k/Financial-QA-10k.csv
"""

from __future__ import annotations

import contextlib
import csv
import json
import tempfile
import time
from pathlib import Path

import click

from raglab.core.formats import DataError, read_jsonl, read_lines, require_text, write_json, write_jsonl
from raglab.core.machine import CoreSharing, describe_machine, machine_label
from raglab.evaluation.intervals import passage_key
from raglab.evaluation.metrics import hit_at, mrr_at, percentiles, rank_of
from raglab.experiments.compare import system_pairs
from raglab.experiments.records import MACHINE, record_machine
from raglab.params.loader import read_yaml, set_value, validate
from raglab.params.rerank import Rerank
from raglab.rag.kb import read_kb
from raglab.retriever.rerank import Reranker
from raglab.retriever.systems import Retrievers
from raglab.serving.vllm import free_port, server_for


def pairs(source: Path) -> tuple[list[str], list[str], list[str]]:
    """Questions, their gold passages and the knowledge base (a CSV's rows without both left out)."""
    if source.is_dir():
        rows = read_jsonl(source / "eval.jsonl")
        return [r["query"] for r in rows], [r["corpus"][0] for r in rows], read_lines(source / "kb.txt")
    if source.suffix == ".jsonl":  # build_sft's eval split, the RAG system's questions over SPLIT_kb.jsonl
        rows = read_jsonl(source)
        kb = read_kb(source.with_name(f"{source.stem}_kb.jsonl"))
        return ([require_text(r, "question", source, i) for i, r in enumerate(rows, start=1)],
                [require_text(r, "context", source, i) for i, r in enumerate(rows, start=1)], kb)
    with open(source, encoding="utf-8", newline="") as f:
        rows = [r for r in csv.DictReader(f) if (r.get("question") or "").strip() and (r.get("context") or "").strip()]
    kb = list(dict.fromkeys(r["context"] for r in rows))
    return [r["question"] for r in rows], [r["context"] for r in rows], kb


def scored_lines(path: Path) -> list[dict]:
    """The queries --out already holds, in order (a line cut short by a kill is left for the resumed run)."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines() if path.exists() else []:
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return lines


class Recorded(Reranker):
    """The LLM's scores as --out recorded them, so that ``Reranker.rerank`` fuses and cuts them as serving does."""

    def __init__(self, kind: str, scores: list[float]):
        self.kind, self.recorded, self.seconds = kind, scores, []

    def scores(self, query: str, passages: list[str]) -> list[float]:
        return self.recorded[:len(passages)]  # the candidates come in their recorded order


def fused(rerank: Rerank, kind: str, weight: float) -> Rerank:
    """Params ``rerank`` with reranker ``kind`` fused with the first stage at ``weight`` and no threshold."""
    group = getattr(rerank.llm, kind).model_copy(update={"first_stage_weight": weight, "threshold": None})
    return rerank.model_copy(update={"llm": rerank.llm.model_copy(update={kind: group})})


def reranked(line: dict, kb: list[str], kind: str, keep: int, rerank: Rerank) -> list[int]:
    """The passages of one recorded query in the order the reranker gives them over the first ``keep``
    candidates (``rerank``: its fusion with their first-stage ranks)."""
    candidates = [(j, 0.0) for j in line["candidates"][:keep]]
    return [j for j, _ in Recorded(kind, line["scores"]).rerank(line["query"], candidates, kb, 10, rerank)]


def figures(order: list[int], kb: list[str], gold: str) -> dict[str, float]:
    """hit@1, hit@5 and MRR@10 of the passages ``order`` (indices into ``kb``), as score_retrieval reads them."""
    rank = rank_of([kb[j] for j in order], gold)
    return {"hit@1": hit_at(rank, 1), "hit@5": hit_at(rank, 5), "mrr@10": mrr_at(rank, 10)}


def write_record(folder: Path, split: str, first_stage: str, kind: str, lines: list[dict], first_rows: list[dict],
                 reranked_rows: list[dict], machine: dict | None) -> None:
    """``folder/score/retrieval/SPLIT.jsonl`` in score_retrieval's layout (the reranked system's rows with the
    LLM's seconds, ``rerank_s``, but for a run's warm-up query) and ``machine``, the one that scored the lines
    (None: not known), in the record's ``machine.json``. The
    systems another first stage recorded there for the same queries stay beside these (one record, one file per
    split, as score_retrieval writes all its systems in one)."""
    path = folder / "score" / "retrieval" / f"{split}.jsonl"
    rows = [{"query": line["query"], "gold": line["gold"], first_stage: first,
             f"{first_stage}+{kind}": {**reranked, "rerank_s": None if line.get("warm_up") else round(line["s"], 4)}}
            for line, first, reranked in zip(lines, first_rows, reranked_rows)]
    if path.exists():
        before = read_jsonl(path)
        if [r["query"] for r in before] != [r["query"] for r in rows]:
            raise click.ClickException(f"{path}: recorded for other queries than these {len(rows)}: another --record")
        rows = [{**old, **new} for old, new in zip(before, rows)]
    write_jsonl(path, rows)
    # the record's machine: the first run's; each reranked system's own run under ``stages`` (``{machine:RUN:
    # SYSTEM}`` labels its timing), as a DVC record names a stage run elsewhere
    recorded = record_machine(folder)
    if machine is not None or recorded is None:
        run = {"source": "measured", **(machine or describe_machine())}
        recorded = recorded or dict(run)
        if machine is not None:
            recorded.setdefault("stages", {})[f"{first_stage}+{kind}"] = {"machine": run}
        write_json(folder / MACHINE, recorded)


def mean(rows: list[dict], key: str) -> float:
    return 100 * sum(r[key] for r in rows) / len(rows)


@click.command()
@click.option("--llm", "llm_dir", required=True, type=click.Path(file_okay=False, exists=True),
              help="The LLM folder (download@llm's models/base/llm).")
@click.option("--adapter", default=None, type=click.Path(file_okay=False, exists=True),
              help="A LoRA adapter to merge (train_llm's models/llm-adapter; rerank.llm.model sft).")
@click.option("--eval", "source", required=True, type=click.Path(exists=True),
              help="A folder with eval.jsonl and kb.txt, build_sft's eval/SPLIT.jsonl (SPLIT_kb.jsonl beside it), "
                   "or a CSV with question and context columns.")
@click.option("--first-stage", default="bm25", show_default=True, help="bm25 | base | tuned | hybrid (rag.hybrid).")
@click.option("--tuned-embedder", default=None, type=click.Path(file_okay=False, exists=True),
              help="train_embed's folder, for a first stage that uses `tuned`.")
@click.option("--kind", type=click.Choice(["query_likelihood", "yes_no"]), default="query_likelihood",
              show_default=True)
@click.option("--queries", default=10, show_default=True, help="Queries scored (the first N; 0: all).")
@click.option("--candidates", default=10, show_default=True, help="The first stage's top K scored per query.")
@click.option("--keep", default=None, help="Candidate counts (<= K) to report, comma-separated (default: K).")
@click.option("--weights", default="0", show_default=True,
              help="First-stage weights (rank fusion; 0: the LLM's order alone) to report, comma-separated.")
@click.option("--batch-size", default=None, type=int, help="Pairs per forward pass (default rerank.llm.batch_size).")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto", show_default=True)
@click.option("--vllm", "use_vllm", is_flag=True,
              help="Score through a vLLM server started on --llm for the run (the serving params; --precision is "
                   "its dtype) and its prompt logprobs (rerank.llm.endpoint), instead of transformers in this process.")
@click.option("--out", "out_file", default=None, type=click.Path(dir_okay=False),
              help="One line per query (resumed from when it exists); OUT.machine.json: the machine that scored.")
@click.option("--against", default=None,
              help="FILE:SYSTEM, a score_retrieval per-query file and a system in it, or FILE, score_rag's per-query "
                   "file of one system (retrieval/SYSTEM.jsonl), to compare hit@1 with by a paired bootstrap (same "
                   "queries, same order).")
@click.option("--record", "record_dir", default=None, type=click.Path(file_okay=False),
              help="Also write the last row's per-query scores as score_retrieval does (RECORD/score/retrieval/"
                   "SPLIT.jsonl, SPLIT the --eval folder's or file's name: the first stage and first_stage+kind) "
                   "and the machine (RECORD/machine.json), for compare and the generated tables.")
@click.option("--params", "params_file", default="params.yaml", show_default=True)
@click.option("--set", "assignments", multiple=True, help="A params override, group.key=value (repeatable).")
def main(llm_dir: str, adapter: str | None, source: str, first_stage: str, tuned_embedder: str | None, kind: str,
         queries: int, candidates: int, keep: str | None, weights: str, batch_size: int | None, precision: str,
         use_vllm: bool, out_file: str | None, against: str | None, record_dir: str | None, params_file: str,
         assignments: tuple[str, ...]) -> None:
    import torch

    raw = read_yaml(params_file)
    assignments += (f"rerank.precision={precision}", f"rerank.llm.model={'sft' if adapter else 'base'}",
                    "rerank.llm.endpoint=null") + ((f"rerank.llm.batch_size={batch_size}",) if batch_size else ())
    for assignment in assignments:
        raw = set_value(raw, assignment)
    params = validate(raw, params_file)
    server = None
    if use_vllm:
        if adapter:
            raise click.UsageError("--vllm serves --llm alone: merge the adapter into a folder first")
        server = server_for(llm_dir, params.serving, trust_remote_code=params.llm.trust_remote_code,
                            log_file=Path(tempfile.gettempdir()) / "llm_rerank-vllm.log")
        server.dtype, server.port = {"fp32": "float32", "bf16": "bfloat16"}.get(precision, server.dtype), free_port()
        raw["rerank"]["llm"].update(model="endpoint", endpoint={
            "base_url": server.base_url, "model": server.served_name, "api_key_env": None, "prompt_logprobs": True})
        params = validate(raw, params_file)
    counts = [int(x) for x in keep.split(",")] if keep else [candidates]
    if max(counts) > candidates:
        raise click.BadParameter(f"{max(counts)} candidates kept, of the {candidates} scored", param_hint="--keep")
    try:
        questions, golds, kb = pairs(Path(source))
    except DataError as e:  # named by file, row and field
        raise click.ClickException(str(e)) from e
    n = queries or len(questions)
    questions, golds = questions[:n], golds[:n]
    out = Path(out_file) if out_file else None
    lines = scored_lines(out) if out else []
    if [line["query"] for line in lines] != questions[:len(lines)]:
        raise click.ClickException(f"{out}: its queries are not the first ones of {source}: another --out")

    todo = range(len(lines), n)
    sharing = CoreSharing()  # whether other jobs shared the cores while this run scored (unknown if it scored none)
    if todo:
        retrievers = Retrievers(kb, params, tuned_embedder=tuned_embedder, llm=llm_dir, adapter=adapter)
        firsts = retrievers.search(first_stage, [questions[i] for i in todo], candidates)
        reranker = retrievers.reranker(kind)
        scorer = retrievers.llm_scorer()
        engine = f"vLLM {server.served_dtype()}" if server else f"transformers {scorer.precision}"
        print(f"{kind} on {llm_dir}{f' + {adapter}' if adapter else ''}: {engine}"
              f"{f' (log: {server.log_file})' if server else ''}, batch "
              f"{params.rerank.llm.batch_size}; {first_stage}'s top {candidates} of {len(kb)} passages")
        with open(out, "a", encoding="utf-8") if out else open("/dev/null", "w") as sink, sharing, \
                server or contextlib.nullcontext():
            for i, first in zip(todo, firsts):
                started = time.perf_counter()
                scores = reranker.scores(questions[i], [kb[j] for j, _ in first])
                line = {"query": questions[i], "gold": golds[i], "candidates": [j for j, _ in first],
                        "scores": scores, "s": time.perf_counter() - started, "warm_up": i == todo[0],
                        "engine": engine}
                lines.append(line)
                sink.write(json.dumps(line, ensure_ascii=False) + "\n")
                sink.flush()
                if (i + 1) % 10 == 0 or i + 1 == n:
                    print(f"  {i + 1}/{n} queries, {line['s']:.2f} s the last", flush=True)

    timed = [line for line in lines if not line.get("warm_up")] or lines  # each run's first query warms up
    # the machine that scored --out's lines, beside it (OUT.machine.json), so that a later run which only reads
    # them (choosing, recording) labels their timings with it
    machine_file = out.with_name(out.name + ".machine.json") if out else None
    scored_on = None  # the machine that scored the lines, where known
    if todo:
        scored_on = {**describe_machine(), **sharing.result}
        if machine_file:
            write_json(machine_file, scored_on)
    elif machine_file and machine_file.exists():
        scored_on = json.loads(machine_file.read_text(encoding="utf-8"))
    print(f"{machine_label(scored_on or describe_machine())}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    p50, p95 = percentiles(timed, "s", "query_s").values()
    print(f"{len(lines)} queries, {first_stage}'s top {candidates}: seconds per query p50 {p50:.3f}, "
          f"p95 {p95:.3f} (over {len(timed)} queries)")
    first_rows = [figures(line["candidates"], kb, line["gold"]) for line in lines]
    print(f"{first_stage}: " + ", ".join(f"{k} {mean(first_rows, k):.2f}" for k in first_rows[0]))
    chosen = None
    for k in counts:
        for w in (float(x) for x in weights.split(",")):
            rerank = fused(params.rerank, kind, w)
            rows = [figures(reranked(line, kb, kind, k, rerank), kb, line["gold"]) for line in lines]
            print(f"{first_stage}+{kind}, top {k}, first-stage weight {w}: "
                  + ", ".join(f"{key} {mean(rows, key):.2f}" for key in rows[0]))
            chosen = rows
    if record_dir:
        write_record(Path(record_dir), Path(source).stem, first_stage, kind, lines, first_rows, chosen, scored_on)
    keys = [passage_key(line["gold"], i) for i, line in enumerate(lines)]  # the keys compare gives these queries

    def compare(name: str, old: list[float]) -> None:
        """The paired interval ``python -m raglab.experiments.compare --pair`` prints for the same two files."""
        scores = {("run", "retrieval", "split", system): {k: {"hit@1": v} for k, v in zip(keys, values)}
                  for system, values in (("new", [r["hit@1"] for r in chosen]), ("old", old))}
        (row,) = system_pairs(scores, [("run/retrieval/split/new", "run/retrieval/split/old")])
        print(f"the last row against {name} ({100 * sum(old) / len(old):.2f}): hit@1 {100 * row.delta:+.2f} "
              f"[{100 * row.low:+.2f}, {100 * row.high:+.2f}] (95 % paired bootstrap, by gold passage)")

    compare(first_stage, [r["hit@1"] for r in first_rows])
    if against:
        file, _, system = against.rpartition(":") if ":" in against else (against, "", "")
        theirs = read_jsonl(file)[:len(lines)]
        if [r.get("query", r.get("question")) for r in theirs] != [line["query"] for line in lines]:
            raise click.ClickException(f"{file}: not the same queries in the same order as {source}")
        # score_rag's file is one system's (named by the file): its rows hold the figures themselves
        compare(system or Path(file).stem, [(r[system] if system else r)["hit@1"] for r in theirs])


if __name__ == "__main__":
    main()
