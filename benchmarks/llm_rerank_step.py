"""Time one training step of a LoRA decoder-only reranker (FlagEmbedding's ``decoder_only`` trainer's model), on CPU.

FlagEmbedding's ``CrossDecoderModel`` (as bge-reranker-v2-gemma is trained: the logit of "Yes" at the last position
of "A: query / B: passage / Given a query A and a passage B, ... 'Yes' or 'No'.", cross-entropy over each query's
group of one positive and ``group - 1`` negatives) over the local instruct LLM with peft's LoRA on every linear
layer. Each step is ``--batch`` queries x ``--group`` passages: forward, backward and an AdamW step. Real
question/passage text is read from a financial-qa JSON Lines file (negatives: other rows' passages) so the lengths
are the task's. Prints the median of ``--steps`` steps (after a warm-up step) per precision, and what one epoch
over ``--queries`` training queries would take at that rate.

    python benchmarks/llm_rerank_step.py --model models/base/llm --pairs data/raw/financial_qa/train.jsonl
"""

from __future__ import annotations

import random
import statistics
import time

import click

PROMPT = ("Given a query A and a passage B, determine whether the passage contains an answer to the query by "
          "providing a prediction of either 'Yes' or 'No'.")  # FlagEmbedding's decoder-only default


@click.command()
@click.option("--model", "model_dir", required=True, type=click.Path(file_okay=False, exists=True),
              help="A transformers folder of the instruct LLM (download@llm's models/base/llm).")
@click.option("--pairs", "pairs_file", required=True, type=click.Path(dir_okay=False, exists=True),
              help="JSON Lines with question and context fields (financial-qa's train.jsonl).")
@click.option("--batch", default=4, show_default=True, help="Queries per step.")
@click.option("--group", default=8, show_default=True, help="Passages per query: 1 positive + group - 1 negatives.")
@click.option("--query-max-len", default=64, show_default=True)
@click.option("--passage-max-len", default=256, show_default=True)
@click.option("--lora-rank", default=32, show_default=True)
@click.option("--steps", default=3, show_default=True)
@click.option("--precisions", default="fp32", show_default=True,
              help="Comma-separated fp32,bf16; bf16 crawls on a CPU without AMX / avx512_bf16.")
@click.option("--queries", default=6109, show_default=True,
              help="Training queries of the recipe the epoch estimate is for (financial-qa's training rows "
                   "outside a 3 %% validation slice).")
def main(model_dir: str, pairs_file: str, batch: int, group: int, query_max_len: int, passage_max_len: int,
         lora_rank: int, steps: int, precisions: str, queries: int) -> None:
    import torch
    from FlagEmbedding.finetune.reranker.decoder_only.base.modeling import CrossDecoderModel
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from raglab.core.formats import read_jsonl
    from raglab.core.machine import describe_machine, machine_label

    rows = [r for r in read_jsonl(pairs_file) if r.get("question") and r.get("context")]
    rng = random.Random(0)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    def pieces(text: str, limit: int) -> list[int]:
        return tokenizer(text, add_special_tokens=False, truncation=True, max_length=limit)["input_ids"]

    sep, prompt = pieces("\n", 8), pieces(PROMPT, 64)

    def features() -> dict:
        sequences = []
        for row in rng.sample(rows, batch):
            negatives = [r["context"] for r in rng.sample(rows, group - 1)]
            query = pieces(f"A: {row['question']}", query_max_len)
            sequences += [query + sep + pieces(f"B: {p}", passage_max_len) + sep + prompt
                          for p in [row["context"], *negatives]]
        width = max(map(len, sequences))  # left padding: the last position is every sequence's own last token
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        ids = torch.tensor([[pad] * (width - len(s)) + s for s in sequences])
        mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in sequences])
        return {"input_ids": ids, "attention_mask": mask}

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    lora = LoraConfig(r=lora_rank, lora_alpha=lora_rank * 2, lora_dropout=0.0, task_type="CAUSAL_LM",
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    model = CrossDecoderModel(get_peft_model(base, lora), tokenizer=tokenizer, train_batch_size=batch)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    total = sum(p.numel() for p in model.parameters())
    print(f"{machine_label(describe_machine())}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"{total / 1e6:.0f}M parameters, {sum(p.numel() for p in trainable):,} trainable (LoRA rank "
          f"{lora_rank}, every linear layer); {batch} queries x {group} passages a step, query <= {query_max_len} and "
          f"passage <= {passage_max_len} tokens")
    for precision in precisions.split(","):
        times, tokens = [], []
        for _ in range(steps + 1):  # the first step warms up
            inputs = features()
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = model(inputs).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            times.append(time.perf_counter() - t0)
            tokens.append(int(inputs["attention_mask"].sum()))
        step = statistics.median(times[1:])
        epoch_h = step * queries / batch / 3600
        print(f"{precision}: median {step:.2f} s/step over {steps} steps ({statistics.median(tokens[1:])} tokens a "
              f"step, loss {loss.item():.3f}); one epoch over {queries} queries = {queries // batch} steps = "
              f"{epoch_h:.1f} h")


if __name__ == "__main__":
    main()
