import json
import re

import pytest

from raglab.core.prompts import chat_messages, check_template, render
from raglab.core.report import StageReport
from raglab.core.sampling import sample
from raglab.generator.sft import alpaca_record, eval_record, messages_record, split_by_passage, validate_rc
from raglab.generator.train import conversation, fit_cutoff

TEMPLATE = "请用下面的文段的原文来回答问题\n\n### 已知文段：{context}\n\n### 问题：{question}\n"
SYSTEM = "You are a helpful assistant."


def test_params_template_is_the_brief_template_exactly(params):
    assert params["prompt"]["template"] == TEMPLATE
    assert params["prompt"]["system"] == SYSTEM


def test_template_must_use_context_and_question():
    check_template(TEMPLATE)
    with pytest.raises(ValueError, match="exactly the fields"):
        check_template("{context} only")


def rc_rows():
    return [
        {"id": "a", "context": "甲公司成立于1990年。", "question": "甲公司成立于哪一年？", "answers": ["1990年", "1990年"]},
        {"id": "b", "context": "乙在北京。", "question": "", "answers": ["北京"]},
        {"id": "c", "context": "", "question": "丙在哪？", "answers": ["上海"]},
        {"id": "d", "context": "丁在上海。", "question": "丁在哪？", "answers": ["  "]},
        {"id": "e", "context": "戊在广州。", "question": "戊在哪？", "answers": ["深圳"]},
        {"id": "f", "context": "己在杭州。", "question": "己在哪？", "answers": ["杭州", "浙江杭州"]},
    ]


def test_validation_drops_and_counts():
    report = StageReport("t")
    kept = validate_rc(rc_rows(), report)
    assert [e.id for e in kept] == ["a", "e", "f"]
    assert report.dropped == {"empty_question": 1, "empty_context": 1, "empty_answer": 1}
    # "深圳" is not in its passage: kept, but counted; so is f's second annotator answer
    assert report.extra == {"answer_not_in_context": 1, "other_answer_not_in_context": 1}


def test_record_formats_are_exactly_the_brief():
    ex = validate_rc(rc_rows(), StageReport("t"))[0]
    instruction = "请用下面的文段的原文来回答问题\n\n### 已知文段：甲公司成立于1990年。\n\n### 问题：甲公司成立于哪一年？\n"
    assert alpaca_record(ex, TEMPLATE, SYSTEM) == {"instruction": instruction, "input": "", "output": "1990年",
                                                    "system": SYSTEM}
    assert messages_record(ex, TEMPLATE, SYSTEM) == {"messages": [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": instruction},
        {"role": "assistant", "content": "1990年"},
    ]}
    assert eval_record(ex) == {"id": "a", "context": "甲公司成立于1990年。", "question": "甲公司成立于哪一年？",
                               "answers": "1990年", "golds": ["1990年"]}
    # every annotator's answer (distinct, stripped, the first first) for em_any; the brief's EM keeps the first
    f = validate_rc(rc_rows(), StageReport("t"))[2]
    assert eval_record(f)["answers"] == "杭州" and eval_record(f)["golds"] == ["杭州", "浙江杭州"]


def test_training_conversation_equals_inference_conversation():
    ex = validate_rc(rc_rows(), StageReport("t"))[0]
    row = conversation(alpaca_record(ex, TEMPLATE, SYSTEM))
    # what serve_infer sends for the same eval record
    assert row["prompt"] == chat_messages(SYSTEM, render(TEMPLATE, ex.context, ex.question))
    assert row["completion"] == [{"role": "assistant", "content": "1990年"}]


def test_passage_split_is_seeded_and_keeps_passages_on_one_side():
    from raglab.generator.sft import RCExample

    exs = [RCExample(str(i), f"passage {i // 3}", f"q{i}", "a") for i in range(60)]
    train, held = split_by_passage(exs, 0.25, seed=1)
    assert (train, held) == split_by_passage(exs, 0.25, seed=1)
    assert {e.context for e in train}.isdisjoint({e.context for e in held})
    assert len({e.context for e in held}) == 5 and len(train) + len(held) == 60
    assert [e.id for e in sample(exs, 10, 0)] == [e.id for e in sample(exs, 10, 0)]
    assert len(sample(exs, 10, 0)) == 10 and sample(exs, None, 0) == exs


def test_overlong_records_are_dropped_or_kept_and_counted(tiny_llm):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llm)
    ex = validate_rc(rc_rows(), StageReport("t"))
    rows = [conversation(alpaca_record(e, TEMPLATE, SYSTEM)) for e in ex]
    rows[1]["prompt"][-1]["content"] += "很长" * 500
    report = StageReport("t")
    assert fit_cutoff(rows, tok, 200, "drop", report, "train") == [rows[0], rows[2]]
    assert report.dropped == {"train_longer_than_cutoff": 1}
    report = StageReport("t")
    assert fit_cutoff(rows, tok, 200, "truncate", report, "train") == rows
    assert report.extra == {"train_truncated_to_cutoff": 1}


def test_prompt_tokens_carry_no_loss(tiny_llm, tmp_path):
    """trl masks the prompt: the only labelled tokens are the answer and its end of turn."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tok = AutoTokenizer.from_pretrained(tiny_llm)
    ex = validate_rc(rc_rows(), StageReport("t"))
    rows = [conversation(alpaca_record(e, TEMPLATE, SYSTEM)) for e in ex]
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_llm),
        args=SFTConfig(output_dir=str(tmp_path), completion_only_loss=True, max_length=1024, report_to="none",
                       use_cpu=True),
        train_dataset=Dataset.from_list(rows), processing_class=tok,
        peft_config=LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    batch = trainer.data_collator([trainer.train_dataset[0]])
    labels, ids = batch["labels"][0], batch["input_ids"][0]
    labelled = ids[labels != -100].tolist()
    assert tok.decode(labelled) == "1990年<|im_end|>\n"
    prompt_len = len(tok.apply_chat_template(rows[0]["prompt"], add_generation_prompt=True, return_dict=False))
    assert (labels[:prompt_len] == -100).all() and (labels[prompt_len:] != -100).all()
    assert json.dumps(rows[0], ensure_ascii=False)  # rows stay plain JSON


def filled_context(instruction: str, template: str) -> str:
    """The passage a filled ``template`` was rendered with (the instruction must be exactly a rendering)."""
    head, rest = template.split("{context}")
    middle, tail = rest.split("{question}")
    match = re.fullmatch(re.escape(head) + "(.*)" + re.escape(middle) + "(.*)" + re.escape(tail), instruction, re.S)
    assert match and render(template, *match.groups()) == instruction, instruction
    return match.group(1)


def test_trial_records_with_an_extra_split(mirror, tmp_path, params):
    """The CPU trial profile's layout: trial_a split by passage into train / val / test, validation's records
    added to training only; `val` and the eval set stay trial-style, and no eval passage is trained on."""
    import yaml
    from click.testing import CliRunner

    from raglab.core.formats import read_jsonl
    from stages import build_sft, download

    params = json.loads(json.dumps(params))
    params["download"]["mirror"] = str(mirror)
    params["download"]["datasets"]["cmrc2018"]["splits"] = ["validation", "trial_a"]
    params["build_sft"].update(train_split="trial_a", eval_split="trial_a", eval_size=0.25, val_size=0.34,
                               max_samples=None, extra_train_splits=["validation"], max_extra=7)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params, allow_unicode=True), encoding="utf-8")
    runner = CliRunner()
    for command, args in [(download.main, ["--out", str(tmp_path / "raw")]),
                          (build_sft.main, ["--source", str(tmp_path / "raw" / "cmrc2018"), "--out", str(tmp_path / "sft")])]:
        result = runner.invoke(command, ["--params", str(params_file), *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
    test, val = (read_jsonl(tmp_path / "sft" / "eval" / f"{n}.jsonl") for n in ("test", "val"))
    train = read_jsonl(tmp_path / "sft" / "train.jsonl")
    assert test and val and all(r["id"].startswith("TRIAL") for r in test + val)
    trained = {r["id"] for r in read_jsonl(tmp_path / "sft" / "pairs.jsonl")}
    assert sum(i.startswith("DEV") for i in trained) == len(read_jsonl(tmp_path / "raw" / "cmrc2018" / "validation.jsonl"))
    assert len(train) == len(read_jsonl(tmp_path / "raw" / "cmrc2018" / "trial_a.jsonl")) - len(test) - len(val) + 7
    # no eval passage inside any training record (an instruction is the filled template, the passage a part of it)
    eval_passages = {r["context"] for r in test + val}
    messages = read_jsonl(tmp_path / "sft" / "train_messages.jsonl")
    texts = [r["instruction"] for r in train] + [m["content"] for r in messages for m in r["messages"]]
    leaked = {p for p in eval_passages for text in texts if p in text}
    assert not leaked, leaked
    # each instruction is the template filled with a passage of the training side (pairs.jsonl, val's held out)
    pairs = {r["context"] for r in read_jsonl(tmp_path / "sft" / "pairs.jsonl")}
    assert {filled_context(r["instruction"], params["prompt"]["template"]) for r in train} <= pairs - eval_passages
    assert not {r["context"] for r in test} & (pairs | {r["context"] for r in val})

    params["build_sft"]["extra_train_splits"] = ["trial_a"]
    params_file.write_text(yaml.safe_dump(params, allow_unicode=True), encoding="utf-8")
    result = runner.invoke(build_sft.main, ["--params", str(params_file), "--source", str(tmp_path / "raw" / "cmrc2018"),
                                            "--out", str(tmp_path / "sft2")])
    assert result.exit_code != 0 and "'trial_a' is already the train_split or the eval_split" in str(result.exception)
