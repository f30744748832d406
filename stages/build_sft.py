"""Stage `build_sft`: CMRC 2018 reading comprehension -> SFT records (Alpaca and messages), eval sets, the RAG
system's knowledge bases (the passages of each eval split) and the question/passage pairs of the training
passages (`pairs.jsonl`: what build_embed_negatives tunes the RAG system's embedder on)."""

from pathlib import Path

import click

from raglab.core.errors import run
from raglab.core.formats import write_jsonl
from raglab.core.report import StageReport
from raglab.core.sampling import sample
from raglab.data.sources import read_downloaded
from raglab.generator.sft import alpaca_record, eval_record, messages_record, split_by_passage, validate_rc
from raglab.params.loader import load_params
from raglab.rag.kb import unique_passages, write_kb


@click.command()
@click.option("--params", "params_file", default="params.yaml", show_default=True)
@click.option("--source", "source_dir", default="data/raw/cmrc2018", show_default=True, type=click.Path(file_okay=False))
@click.option("--out", "out_dir", default="data/sft", show_default=True, type=click.Path(file_okay=False))
def main(params_file: str, source_dir: str, out_dir: str) -> None:
    params = load_params(params_file)
    p, prompt = params.build_sft, params.prompt
    out = Path(out_dir)
    with StageReport("build_sft", out / "report.json") as report:
        def load(split):
            return validate_rc(read_downloaded(source_dir, "cmrc2018", split, "build_sft", report), report)

        if p.train_split == p.eval_split:
            train, evaluation = split_by_passage(load(p.train_split), p.eval_size, p.seed)
        else:
            train, evaluation = load(p.train_split), load(p.eval_split)
        # every question of every training passage, before sampling: no eval passage is among them
        held_out = {e.context for e in evaluation}
        extra_all = [e for split in p.extra_train_splits for e in load(split)]
        extra = [e for e in extra_all if e.context not in held_out]
        if len(extra) < len(extra_all):
            report.drop("extra_train_splits: passage also in the eval split", len(extra_all) - len(extra))
        report.add_wrote("pairs.jsonl", write_jsonl(out / "pairs.jsonl", (
            {"id": e.id, "question": e.question, "context": e.context} for e in train + extra)))
        extra = sample(extra, p.max_extra, p.seed)
        kb = {"test": unique_passages([{"context": e.context} for e in evaluation])}  # the whole split's passages
        train = sample(train, p.max_samples, p.seed)
        evaluation = sample(evaluation, p.max_eval, p.seed)
        fit, val = split_by_passage(train, p.val_size, p.seed) if p.val_size else (train, [])
        fit += extra  # `val` stays train_split's style: what the recipe is chosen on

        template, system = prompt.template, prompt.system
        for name, examples in [("train", fit), ("val", val)]:
            report.add_wrote(f"{name}.jsonl", write_jsonl(out / f"{name}.jsonl", (alpaca_record(e, template, system) for e in examples)))
            write_jsonl(out / f"{name}_messages.jsonl", (messages_record(e, template, system) for e in examples))
        # eval sets for serve_infer: the eval split (test) and the held-out training passages (val, to choose on)
        kb["val"] = unique_passages([{"context": e.context} for e in val])
        for name, examples in [("test", evaluation), ("val", val)]:
            report.add_wrote(f"eval/{name}.jsonl", write_jsonl(out / "eval" / f"{name}.jsonl", (eval_record(e) for e in examples)))
            report.add_wrote(f"eval/{name}_kb.jsonl", write_kb(out / "eval" / f"{name}_kb.jsonl", kb[name]))


if __name__ == "__main__":
    run(main)
