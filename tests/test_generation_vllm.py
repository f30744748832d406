"""The generator path end to end on the tiny model: vLLM server lifecycle, and learnability.

The learnability test LoRA-trains the tiny random-weight model to reproduce the
answers of 8 training records, serves base + adapter through vLLM exactly as
serve_infer does (same chat, same server, same client), and asserts the adapter
reproduces at least 7 of 8 answers while the base reproduces none. It catches
template drift between training and serving, wrong masking, and an adapter that
is never applied.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from raglab.client import Endpoint, chat_all
from raglab.llm_training import conversation, train_lora
from raglab.prompts import chat_messages, render
from raglab.report import StageReport
from raglab.serving import ServerError, VLLMServer, adapter_rank
from raglab.sft import alpaca_record, validate_rc

pytestmark = pytest.mark.slow


def process_group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_server_starts_healthy_and_is_killed_on_error(tiny_llm, tmp_path):
    server = VLLMServer(tiny_llm, max_model_len=1024, startup_timeout_s=300, log_file=tmp_path / "vllm.log")
    with pytest.raises(RuntimeError, match="boom"):
        with server:
            pgid, port = server._proc.pid, server.port
            assert server.host == "127.0.0.1" and port_open(port)
            reply = chat_all(Endpoint(server.base_url, "base"), [chat_messages(None, "hi")], max_tokens=4)
            assert isinstance(reply[0], str)
            raise RuntimeError("boom")
    assert not process_group_alive(pgid), "vLLM processes outlived the server context"
    assert not port_open(port)


def test_server_that_cannot_start_fails_fast_without_orphans(tmp_path):
    server = VLLMServer(str(tmp_path / "no-such-model"), startup_timeout_s=120, log_file=tmp_path / "vllm.log")
    with pytest.raises(ServerError, match="exited with code"):
        with server:
            pass
    assert server._proc is None


def test_sigterm_to_serve_process_stops_vllm(tiny_llm, tmp_path):
    """A stage killed by SIGTERM (e.g. DVC cancelled) takes its server down with it."""
    script = (
        "import sys, time\n"
        "from raglab.serving import VLLMServer\n"
        f"s = VLLMServer({tiny_llm!r}, max_model_len=1024, startup_timeout_s=300, log_file={str(tmp_path / 'v.log')!r})\n"
        "with s:\n"
        "    print(s._proc.pid, flush=True)\n"
        "    time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    pgid = int(proc.stdout.readline())
    assert process_group_alive(pgid)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert not process_group_alive(pgid)


def test_learnability_adapter_reproduces_training_answers_base_does_not(tiny_llm, mirror, params, tmp_path):
    doc = json.loads((mirror / "cmrc2018" / "cmrc2018_train.json").read_text(encoding="utf-8"))
    rows = [{"id": q["id"], "context": p["context"], "question": q["question"],
             "answers": [a["text"] for a in q["answers"]]}
            for p in doc["data"][0]["paragraphs"] for q in p["qas"]]
    examples = validate_rc(rows, StageReport("t"))[:8]
    template, system = params["prompt"]["template"], params["prompt"]["system"]
    records = [conversation(alpaca_record(e, template, system)) for e in examples]

    # A 2-layer random model memorises through LoRA alone only with some capacity and a decaying rate.
    hp = {**params["train_llm"], "learning_rate": 3e-3, "epochs": 80, "batch_size": 4, "cutoff_len": 1024,
          "lr_scheduler": "cosine", "lora_rank": 16, "lora_alpha": 32, "logging_steps": 40, "save_steps": 10_000}
    base = {"model": tiny_llm, "revision": None, "trust_remote_code": False}
    adapter = tmp_path / "adapter"
    train_lora(base, hp, records, [], adapter, tmp_path / "ckpt", tmp_path / "live", "learnability")
    assert (adapter / "adapter_model.safetensors").is_file()

    # exactly what serve_infer sends
    chats = [chat_messages(system, render(template, e.context, e.question)) for e in examples]
    golds = [e.answer for e in examples]
    with VLLMServer(tiny_llm, lora_modules={"sft": str(adapter)}, max_lora_rank=adapter_rank(adapter),
                    max_model_len=1024, startup_timeout_s=300, log_file=tmp_path / "vllm.log") as server:
        tuned = chat_all(Endpoint(server.base_url, "sft"), chats, max_tokens=24)
        untuned = chat_all(Endpoint(server.base_url, "base"), chats, max_tokens=24)
    hits = sum(p.strip() == g for p, g in zip(tuned, golds))
    assert hits >= 7, list(zip(tuned, golds))
    assert sum(p.strip() == g for p, g in zip(untuned, golds)) == 0, list(zip(untuned, golds))
