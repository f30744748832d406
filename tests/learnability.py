"""The learnability recipe: LoRA-train the tiny random-weight model to reproduce 8 training answers.

Shared by the learnability test (tests/test_generation_vllm.py), which serves the adapter through
vLLM, and by benchmarks/learnability_margin.py, which measures how robustly the recipe memorises:
the **logit margin** of the greedy answer, i.e. over every answer token (and the end-of-turn token)
of the 8 records, teacher-forced, the smallest gap between the gold token's logit and the best
other token's. A positive margin means greedy decoding reproduces all 8 answers; a margin of
several logits means no CPU's floating-point rounding (bf16 / AMX kernels, oneDNN paths, thread
count, vLLM's own kernels) can flip a token.
"""

from __future__ import annotations

import json
from pathlib import Path

from raglab.core.prompts import chat_messages, render
from raglab.core.report import StageReport
from raglab.generator.sft import RCExample, alpaca_record, validate_rc
from raglab.generator.train import conversation

N_RECORDS = 8

# A 2-layer random model memorises through LoRA alone only with some capacity and a decaying rate.
# At 3e-3 it often stalls with the second passage's answers at a margin of about 0 (then the CPU's
# rounding decides: 6 of 8 on one machine, 7 on another); at 1e-3 it separates the passages between
# epochs 50 and 160, and the remaining epochs widen the margin to 5-8 logits (the test's docstring
# has the measured figures).
RECIPE = {"learning_rate": 1e-3, "epochs": 300, "batch_size": 4, "cutoff_len": 1024, "lr_scheduler": "cosine",
          "lora_rank": 16, "lora_alpha": 32, "lora_layers": None, "mixed_precision": "fp32",
          "gradient_checkpointing": True, "logging_steps": 40, "save_steps": 10_000}


def examples(mirror: Path) -> list[RCExample]:
    """The first 8 questions of the synthetic CMRC training file (two passages, four questions each)."""
    doc = json.loads((mirror / "cmrc2018" / "cmrc2018_train.json").read_text(encoding="utf-8"))
    rows = [{"id": q["id"], "context": p["context"], "question": q["question"],
             "answers": [a["text"] for a in q["answers"]]}
            for p in doc["data"][0]["paragraphs"] for q in p["qas"]]
    return validate_rc(rows, StageReport("learnability"))[:N_RECORDS]


def records(exs: list[RCExample], prompt: dict) -> list[dict]:
    """trl conversational rows, as train_llm builds them."""
    return [conversation(alpaca_record(e, prompt["template"], prompt["system"])) for e in exs]


def chats(exs: list[RCExample], prompt: dict) -> list[list[dict]]:
    """Exactly what serve_infer sends."""
    return [chat_messages(prompt["system"], render(prompt["template"], e.context, e.question)) for e in exs]


def answer_margins(model, tokenizer, exs: list[RCExample], prompt: dict) -> list[float]:
    """Per record, the smallest logit gap between the gold token and the runner-up over the answer's
    tokens and the end-of-turn token, teacher-forced (negative: greedy decoding goes astray there)."""
    import torch

    margins = []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for chat, ex in zip(chats(exs, prompt), exs):
            prompt_ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True,
                                                       return_dict=False)
            answer_ids = tokenizer(ex.answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            ids = torch.tensor([prompt_ids + answer_ids], device=model.device)
            logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1:-1].float()
            gold = torch.tensor(answer_ids, device=logits.device)
            gold_logit = logits.gather(1, gold[:, None])[:, 0]
            others = logits.scatter(1, gold[:, None], float("-inf")).max(dim=1).values
            margins.append(float((gold_logit - others).min()))
    model.train(was_training)
    return margins
