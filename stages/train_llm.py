"""Stage `train_llm`: LoRA SFT of the generator (trl SFTTrainer + peft), resumable, curves in DVCLive.

With `train_llm.num_processes` > 1 the same script re-launches itself under
`accelerate launch` (one process per GPU).
"""

import os
import sys

import click

from raglab.formats import read_jsonl, write_json
from raglab.llm_training import conversation, fit_cutoff, load_tokenizer, run_fingerprint, train_lora
from raglab.params import load_params, section
from raglab.report import StageReport


@click.command()
@click.option("--params", "params_file", default="params.yaml", show_default=True)
@click.option("--train", "train_file", default="data/sft/train.jsonl", show_default=True, type=click.Path(dir_okay=False, exists=True))
@click.option("--val", "val_file", default="data/sft/val.jsonl", show_default=True, type=click.Path(dir_okay=False, exists=True))
@click.option("--out", "out_dir", default="models/llm-adapter", show_default=True, type=click.Path(file_okay=False))
@click.option("--checkpoints", "checkpoint_dir", default="models/llm-checkpoints", show_default=True, type=click.Path(file_okay=False))
@click.option("--live", "live_dir", default="dvclive/train_llm", show_default=True, type=click.Path(file_okay=False))
@click.option("--metrics", "metrics_file", default="metrics/train_llm.json", show_default=True, type=click.Path(dir_okay=False))
def main(params_file, train_file, val_file, out_dir, checkpoint_dir, live_dir, metrics_file) -> None:
    params = load_params(params_file)
    hp, base = section(params, "train_llm", params_file), section(params, "llm", params_file)
    if hp["num_processes"] > 1 and "LOCAL_RANK" not in os.environ:
        launcher = ["accelerate", "launch", "--num_processes", str(hp["num_processes"]), "-m", "stages.train_llm"]
        os.execvp(launcher[0], launcher + sys.argv[1:])

    with StageReport("train_llm") as report:
        tokenizer = load_tokenizer(base)
        rows = {}
        for name, path in [("train", train_file), ("val", val_file)]:
            records = read_jsonl(path)
            report.add_read(path, len(records))
            rows[name] = fit_cutoff([conversation(r) for r in records], tokenizer, hp["cutoff_len"], hp["overlong"], report, name)
        fingerprint = run_fingerprint(hp, base, [train_file, val_file])
        summary = train_lora(base, hp, rows["train"], rows["val"], out_dir, checkpoint_dir, live_dir, fingerprint)
        report.add_wrote(out_dir, 1)
        write_json(metrics_file, {**summary, "dropped": dict(report.dropped)})


if __name__ == "__main__":
    main()
