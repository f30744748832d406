"""Stage `train_llm`: LoRA SFT of the generator (trl SFTTrainer + peft), resumable, curves in DVCLive.

The training records are a mixture (`train_llm.mixture`): each source (`cmrc`: build_sft's
reading-comprehension records, `math`: distill_cot's verified solutions) contributes at most its
cap (null = all, 0 = none), and the mixture is shuffled with the seed. A source that has no
records (distill_cot kept none, say) adds nothing and the report says so; an empty mixture is an
error. With `train_llm.num_processes` > 1 the same script re-launches itself under torchrun
(`torch.distributed.run`: one process per GPU, or data-parallel processes on a CPU with gloo).
"""

import random

import click

from raglab.core.errors import run
from raglab.core.formats import folder_fingerprint, read_jsonl, write_json
from raglab.core.report import StageReport
from raglab.generator.train import conversation, fit_cutoff, load_tokenizer, train_lora
from raglab.models.trainer import relaunch_distributed, run_fingerprint
from raglab.params.loader import load_params


def mixture(sources: dict[str, str], caps: dict[str, int | None], seed: int, report: StageReport) -> list[dict]:
    """At most ``caps[name]`` records of each source (a seeded sample), shuffled together."""
    if unknown := {name for name, cap in caps.items() if cap != 0} - set(sources):
        raise click.BadParameter(f"train_llm.mixture: no --source for {sorted(unknown)} (given: {sorted(sources)})")
    records = []
    for name, path in sources.items():
        cap = caps.get(name, 0)
        if cap == 0:
            continue
        rows = read_jsonl(path)
        report.add_read(path, len(rows))
        if not rows:
            report.extra.setdefault("empty_sources", []).append(name)
        if cap is not None and len(rows) > cap:
            rows = random.Random(seed).sample(rows, cap)
        report.extra.setdefault("mixture", {})[name] = len(rows)
        records += rows
    random.Random(seed).shuffle(records)
    if not records:
        raise click.ClickException(f"train_llm.mixture {caps} gives no training records "
                                   f"(sources: {report.extra.get('mixture', {})})")
    return records


@click.command()
@click.option("--params", "params_file", default="params.yaml", show_default=True)
@click.option("--base", "base_dir", default="models/base/llm", show_default=True,
              type=click.Path(file_okay=False, exists=True), help="download@llm's folder.")
@click.option("--source", "sources", multiple=True, required=True, metavar="NAME=FILE",
              help="A training source of the mixture, e.g. cmrc=data/sft/train.jsonl.")
@click.option("--val", "val_file", default="data/sft/val.jsonl", show_default=True, type=click.Path(dir_okay=False, exists=True))
@click.option("--out", "out_dir", default="models/llm-adapter", show_default=True, type=click.Path(file_okay=False))
@click.option("--checkpoints", "checkpoint_dir", default="models/llm-checkpoints", show_default=True, type=click.Path(file_okay=False))
@click.option("--live", "live_dir", default="dvclive/train_llm", show_default=True, type=click.Path(file_okay=False))
@click.option("--metrics", "metrics_file", default="metrics/train_llm.json", show_default=True, type=click.Path(dir_okay=False))
def main(params_file, base_dir, sources, val_file, out_dir, checkpoint_dir, live_dir, metrics_file) -> None:
    params = load_params(params_file)
    hp, llm = params.train_llm, params.llm
    relaunch_distributed(hp.num_processes, "stages.train_llm")
    source_files = dict(s.split("=", 1) for s in sources)
    base = {"model": base_dir, "revision": None, "trust_remote_code": llm.trust_remote_code}

    with StageReport("train_llm") as report:
        tokenizer = load_tokenizer(base)
        train = mixture(source_files, hp.mixture.model_dump(), hp.seed, report)
        val = read_jsonl(val_file)
        report.add_read(val_file, len(val))
        if hp.max_val_records is not None and len(val) > hp.max_val_records:
            val = random.Random(hp.seed).sample(val, hp.max_val_records)
        rows = {name: fit_cutoff([conversation(r) for r in records], tokenizer, hp.cutoff_len, hp.overlong,
                                 report, name)
                for name, records in [("train", train), ("val", val)]}
        weights = folder_fingerprint(base_dir, skip=("source.json",))
        fingerprint = run_fingerprint(hp.model_dump(), {**base, "weights": weights}, [*source_files.values(), val_file])
        summary = train_lora(base, hp, rows["train"], rows["val"], out_dir, checkpoint_dir, live_dir, fingerprint)
        report.add_wrote(out_dir, 1)
        write_json(metrics_file, {**summary, "mixture": report.extra["mixture"], "dropped": dict(report.dropped)})


if __name__ == "__main__":
    run(main)
