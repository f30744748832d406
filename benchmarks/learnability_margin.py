"""How robustly the learnability recipe memorises: the logit margin, epoch by epoch.

Builds the tiny random-weight model and the synthetic mirror as the tests do, LoRA-trains it with
the learnability test's recipe (tests/learnability.py) and, every --every epochs, prints the
training loss and the smallest logit margin of the 8 greedy answers (teacher-forced: the gap
between the gold token's logit and the best other token's, over every answer token and the
end-of-turn token). Positive for all 8 = HF greedy decoding reproduces all 8 answers. Vary the
numerics with --threads and --seed (and OMP/oneDNN environment variables) to see how much the
margin moves with them.

    HF_HUB_OFFLINE=1 python benchmarks/learnability_margin.py --threads 1
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import click
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from learnability import RECIPE, answer_margins, examples, records  # noqa: E402
from synthetic import write_mirror  # noqa: E402


@click.command()
@click.option("--threads", type=int, default=None, help="torch threads (default: torch's choice).")
@click.option("--seed", type=int, default=None, help="Training seed (default: train_llm.seed of params.yaml).")
@click.option("--epochs", type=int, default=None, help="Epochs (default: the recipe's).")
@click.option("--set", "overrides", multiple=True, help="Override a recipe value, e.g. --set lora_rank=32.")
@click.option("--every", type=int, default=5, show_default=True, help="Measure every this many epochs.")
def main(threads: int | None, seed: int | None, epochs: int | None, overrides: tuple[str, ...], every: int) -> None:
    import torch
    from transformers import TrainerCallback

    from raglab.generator.train import load_base, train_lora
    from raglab.models.tiny import build_tiny_model, corpus_texts

    if threads:
        torch.set_num_threads(threads)
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    hp = {**params["train_llm"], **RECIPE}
    hp["seed"] = hp["seed"] if seed is None else seed
    hp["epochs"] = hp["epochs"] if epochs is None else epochs
    for item in overrides:
        key, _, value = item.partition("=")
        hp[key] = yaml.safe_load(value)
    prompt = params["prompt"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, recipe "
          f"{ {k: hp[k] for k in (*RECIPE, 'seed')} }")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        mirror = write_mirror(tmp / "mirror")
        model_dir = str(build_tiny_model(tmp / "tiny", corpus_texts(mirror)))
        exs = examples(mirror)
        tokenizer, _ = load_base({"model": model_dir, "revision": None, "trust_remote_code": False})
        rows: list[dict] = []

        class Margins(TrainerCallback):
            def on_epoch_end(self, args, state, control, model=None, **kwargs):
                epoch = round(state.epoch)
                if epoch % every == 0 or epoch == hp["epochs"]:
                    margins = answer_margins(model, tokenizer, exs, prompt)
                    loss = next((e["loss"] for e in reversed(state.log_history) if "loss" in e), float("nan"))
                    rows.append({"epoch": epoch, "loss": loss, "min_margin": min(margins),
                                 "reproduced": sum(m > 0 for m in margins)})
                    print(f"epoch {epoch:3d}  loss {loss:.4f}  min margin {min(margins):7.3f}  "
                          f"reproduced {rows[-1]['reproduced']}/{len(margins)}  "
                          f"[{' '.join(f'{m:.1f}' for m in margins)}]", flush=True)

        t0 = time.perf_counter()
        train_lora({"model": model_dir, "revision": None, "trust_remote_code": False}, {**hp, "logging_steps": 2},
                   records(exs, prompt), [], tmp / "adapter", tmp / "ckpt", tmp / "live", "margin",
                   callbacks=[Margins()])
        first_all = next((r["epoch"] for r in rows if r["reproduced"] == len(exs)), None)
        print(f"trained in {time.perf_counter() - t0:.0f} s; all {len(exs)} first reproduced at epoch "
              f"{first_all}; final min margin {rows[-1]['min_margin']:.3f}, loss {rows[-1]['loss']:.4f}")


if __name__ == "__main__":
    main()
