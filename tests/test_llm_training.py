"""train_llm's pieces: the answer-only loss on a CPU, LoRA on the last layers, and the training mixture."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from raglab.core.formats import write_jsonl
from raglab.core.report import StageReport
from raglab.generator.train import answer_only_trainer_class, conversation, lora_config
from raglab.params.loader import merge, read_yaml
from raglab.params.pipeline import TrainLlm
from raglab.params.schema import validate
from stages.train_llm import mixture

REPO = Path(__file__).resolve().parents[1]

SYSTEM = "You are a helpful assistant."


def records(n: int) -> list[dict]:
    return [{"instruction": f"问题 {i}：" + "文段" * (3 * i + 1), "input": "", "output": f"答案{i}", "system": SYSTEM}
            for i in range(n)]


def hp(**changes) -> TrainLlm:
    return validate(merge(read_yaml(REPO / "params.yaml"), {"train_llm": {
        "lora_rank": 4, "lora_alpha": 8, "lora_dropout": 0.0, "lora_target": "all-linear", "lora_layers": None,
        **changes}})).train_llm


def test_answer_only_loss_and_gradients_equal_trls(tiny_llm, tmp_path):
    """On a CPU the LM head sees the answer positions only; loss and gradients are trl's own, to rounding."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tok = AutoTokenizer.from_pretrained(tiny_llm)
    model = AutoModelForCausalLM.from_pretrained(tiny_llm)
    trainer = answer_only_trainer_class()(
        model=model, processing_class=tok, peft_config=lora_config(model, hp()),
        args=SFTConfig(output_dir=str(tmp_path), completion_only_loss=True, max_length=512, report_to="none",
                       use_cpu=True),
        train_dataset=Dataset.from_list([conversation(r) for r in records(3)]),
    )
    # three rows of different lengths: right padding puts the answers at different positions
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(3)])
    assert len({int(m.sum()) for m in batch["attention_mask"]}) == 3

    def loss_and_grads(compute):
        trainer.model.zero_grad()
        loss = compute(trainer.model, dict(batch))
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in trainer.model.parameters() if p.requires_grad]

    ours, our_grads = loss_and_grads(trainer.compute_loss)
    theirs, their_grads = loss_and_grads(lambda m, b: SFTTrainer.compute_loss(trainer, m, b))
    assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-6), (ours, theirs)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-7) for a, b in zip(our_grads, their_grads))


def test_lora_layers_puts_adapters_on_the_last_layers_only(tiny_llm):
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    def adapted_layers(**changes):
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llm), lora_config(
            AutoModelForCausalLM.from_pretrained(tiny_llm), hp(**changes)))
        names = [n for n, _ in model.named_modules() if n.endswith("lora_A")]
        return {int(n.split(".layers.")[1].split(".")[0]) for n in names}, {n.split(".")[-2] for n in names}

    layers, modules = adapted_layers()
    assert layers == {0, 1}
    assert modules == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert adapted_layers(lora_layers=1) == ({1}, modules)  # the same linear layers, last layer only
    with pytest.raises(ValueError, match="lora_layers"):
        adapted_layers(lora_layers=3)


def test_mixture_caps_shuffles_and_counts(tmp_path):
    cmrc, math = tmp_path / "cmrc.jsonl", tmp_path / "math.jsonl"
    write_jsonl(cmrc, [{"output": f"c{i}"} for i in range(10)])
    write_jsonl(math, [{"output": f"m{i}"} for i in range(4)])
    sources = {"cmrc": str(cmrc), "math": str(math)}
    report = StageReport("t")
    rows = mixture(sources, {"cmrc": 3, "math": None}, 0, report)
    assert len(rows) == 7 and sum(r["output"].startswith("m") for r in rows) == 4
    assert report.extra["mixture"] == {"cmrc": 3, "math": 4}
    assert rows == mixture(sources, {"cmrc": 3, "math": None}, 0, StageReport("t"))  # seeded
    assert [r["output"] for r in mixture(sources, {"cmrc": None, "math": 0}, 0, StageReport("t"))] != \
        [f"c{i}" for i in range(10)]  # shuffled

    write_jsonl(math, [])  # distill_cot kept nothing: training goes on with the rest, and says so
    report = StageReport("t")
    assert len(mixture(sources, {"cmrc": None, "math": None}, 0, report)) == 10
    assert report.extra["empty_sources"] == ["math"]
    with pytest.raises(click.ClickException, match="no training records"):
        mixture(sources, {"cmrc": 0, "math": None}, 0, StageReport("t"))
    with pytest.raises(click.BadParameter, match="no --source for"):
        mixture(sources, {"cmrc": None, "gsm": None}, 0, StageReport("t"))
