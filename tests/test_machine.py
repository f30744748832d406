"""Auto precision follows the CPU's flags, read from /proc/cpuinfo (faked here), never the machine the tests run on."""

import pytest

from raglab.core.machine import cpu_flags, fast_bf16, resolve_precision

AMX = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n\nprocessor\t: 1\nflags\t\t: fpu\n"
AVX512_BF16 = "flags\t\t: fpu avx2 avx512f avx512_bf16\n"
EPYC_NO_BF16 = "flags\t\t: fpu sse2 avx avx2 fma\n"


@pytest.mark.parametrize(("cpuinfo", "expected"), [(AMX, "bf16"), (AVX512_BF16, "bf16"), (EPYC_NO_BF16, "fp32"),
                                                   ("", "fp32")])
def test_auto_precision_follows_the_cpu_flags(tmp_path, cpuinfo, expected, caplog):
    path = tmp_path / "cpuinfo"
    path.write_text(cpuinfo)
    assert fast_bf16(path) == (expected == "bf16")
    with caplog.at_level("INFO", logger="raglab"):
        assert resolve_precision("auto", "train_llm", gpu=False, cpuinfo=path) == expected
    assert f"train_llm: auto precision is {expected}" in caplog.text  # logged, with the flags it rests on


def test_auto_precision_on_a_gpu_and_explicit_choices(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(EPYC_NO_BF16)
    assert resolve_precision("auto", "train_embed", gpu=True, cpuinfo=path) == "bf16"
    assert resolve_precision("bf16", "train_embed", gpu=False, cpuinfo=path) == "bf16"  # asked for: kept
    assert resolve_precision("fp32", "train_embed", gpu=False, cpuinfo=tmp_path / "missing") == "fp32"
    assert cpu_flags(tmp_path / "missing") == set()


def test_a_trainer_refuses_fp16_without_a_gpu_and_unknown_names(monkeypatch):
    import torch

    from raglab.models.trainer import training_precision

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="fp16 needs a GPU"):
        training_precision("fp16", "train_llm")
    with pytest.raises(ValueError, match="must be auto, fp32, fp16 or bf16"):
        training_precision("int8", "train_llm")


XEON_AMX = ("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz\n"
            "flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n")
EPYC = "vendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7763 64-Core Processor\nflags\t\t: fpu avx avx2 fma\n"


def test_describe_machine_reads_the_cpu_and_the_label_says_it_short(tmp_path):
    from raglab.core.machine import describe_machine, machine_label

    path = tmp_path / "cpuinfo"
    path.write_text(XEON_AMX)
    machine = describe_machine(path)
    assert machine["cpu"]["model"] == "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz"
    assert machine["cpu"]["vendor"] == "GenuineIntel"
    assert machine["cpu"]["flags"] == ["amx_bf16", "amx_int8", "amx_tile", "avx2", "avx512_bf16", "avx512f"]
    assert machine["cpu"]["cores"] >= 1
    assert machine["packages"]["dvc"] and "vllm" in machine["packages"]  # installed here; None when not
    machine["cpu"]["cores"] = 2
    assert machine_label({**machine, "gpu": None, "shared": False}) == \
        "2-core Intel Xeon Platinum 8481C, AMX + avx512_bf16, alone"
    path.write_text(EPYC)
    epyc = {**describe_machine(path), "gpu": None, "shared": True, "others_share": 0.42}
    epyc["cpu"]["cores"] = 4
    assert machine_label(epyc) == "4-core AMD EPYC 7763, no AVX-512, shared with other jobs (42% of the cores)"
    # a backfilled record knows less: what is unknown is left out, sharing says so
    stated = {"cpu": {"model": "AMD EPYC", "cores": 2, "flags": ["avx512_bf16"]}, "shared": None}
    assert machine_label(stated) == "2-core AMD EPYC, avx512_bf16, sharing unknown"
    assert machine_label({"cpu": {"flags": ["avx512f"]}}) == "unknown CPU, avx512f (no bf16), sharing unknown"
    assert describe_machine(tmp_path / "missing")["cpu"] | {"cores": None} == {
        "model": None, "vendor": None, "cores": None, "flags": []}


def test_every_record_knows_its_machine_and_where_that_is_known_from():
    """Each committed record has a machine.json whose facts say their source; a stage that ran elsewhere (training
    restored from DVC's run-cache of another session) has its own machine, and its label says so."""
    from pathlib import Path

    from raglab.core.machine import machine_label
    from raglab.experiments.records import record_machine, stage_machine

    results = Path(__file__).resolve().parent.parent / "results"
    records = [d for d in sorted(results.iterdir()) if (d / "dvc.lock").is_file()]
    assert records
    for record in records:
        machine = record_machine(record)
        assert machine is not None, f"{record.name} has no machine.json"
        assert machine["source"] == "measured" or machine["source"].startswith("stated in "), record.name
        assert "unknown CPU" not in machine_label(machine), record.name
    cot = record_machine(results / "real-cpu-math-cot")
    assert machine_label(cot) == "2-core Intel Xeon, AMX + avx512_bf16, alone"
    assert machine_label(stage_machine(cot, "train_llm")).endswith("shared with other jobs")
    assert stage_machine(cot, "serve_infer_math") is cot
    assert record_machine(results / "no-such-record") is None


def test_others_share_is_the_cores_busy_time_less_the_runs_own(tmp_path):
    from raglab.core.machine import SHARED_ABOVE, CoreSharing, busy_cpu_seconds, others_share

    # 100 s on 2 cores: the cores were busy 150 s, the run used 140 s of them: others took 10 of 200, 5 %
    assert others_share(busy_s=150, own_s=140, elapsed_s=100, cores=2) == pytest.approx(0.05)
    assert others_share(busy_s=200, own_s=100, elapsed_s=100, cores=2) == pytest.approx(0.5)  # a job on one core
    assert others_share(busy_s=90, own_s=100, elapsed_s=100, cores=2) == 0.0  # tick rounding never goes negative
    assert others_share(busy_s=10, own_s=0, elapsed_s=0, cores=2) == 0.0
    assert SHARED_ABOVE < 0.5
    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal: busy = all but idle and iowait; "cpu" (the total) is not a core
    stat.write_text("cpu  9 9 9 9 9 9 9 9 0 0\ncpu0 100 1 10 500 7 2 3 4 0 0\ncpu1 200 0 20 500 0 0 0 0 0 0\n")
    tick = __import__("os").sysconf("SC_CLK_TCK")
    assert busy_cpu_seconds(None, stat) == pytest.approx(340 / tick)
    assert busy_cpu_seconds({1}, stat) == pytest.approx(220 / tick)
    assert busy_cpu_seconds(None, tmp_path / "missing") is None
    with CoreSharing(tmp_path / "missing") as sharing:
        pass
    assert sharing.result == {"shared": None, "others_share": None}  # unknown, not "alone"


def test_a_pooled_servers_cpu_time_is_the_runs_own(tmp_path, monkeypatch):
    """A kept-alive vLLM server outlives the stage that started it, so no process of the run waits for it; its keeper
    logs its CPU time when it stops, and the run counts that as its own, not as another job's."""
    from raglab.core.machine import POOLED_CPU_LOG, own_cpu_seconds, pooled_cpu_seconds, process_cpu_seconds

    monkeypatch.setenv("RAGLAB_CACHE", str(tmp_path))
    assert pooled_cpu_seconds() == 0.0
    (tmp_path / POOLED_CPU_LOG).parent.mkdir(parents=True)
    (tmp_path / POOLED_CPU_LOG).write_text("6589b694c53b0380 41.25\nab12 8.75\n")
    assert pooled_cpu_seconds() == pytest.approx(50.0)
    assert own_cpu_seconds() - process_cpu_seconds() == pytest.approx(50.0, abs=0.5)


def test_stage_seconds_come_from_each_stages_report_or_its_trainer():
    from raglab.experiments.records import stage_seconds

    lock = {"stages": {
        "train_llm": {"outs": [{"path": "dvclive/train_llm"}, {"path": "metrics/train_llm.json"},
                               {"path": "models/llm-adapter"}]},
        "serve_infer_rag": {"outs": [{"path": "data/infer/rag"}]},
        "score_rag": {"outs": [{"path": "data/score/rag"}, {"path": "metrics/rag.json"}]},
        "download@llm": {"outs": [{"path": "models/base/llm"}]}}}
    files = {"metrics/train_llm.json": '{"steps": 108, "train_runtime_s": 2040.7}',
             "data/infer/rag/report.json": '{"stage": "serve_infer_rag", "seconds": 2254.1}',
             "data/score/rag/report.json": "not json", "metrics/rag.json": "{}"}
    assert stage_seconds(lock, files.get) == {
        "train_llm": {"seconds": 2040.7, "from": "metrics/train_llm.json: train_runtime_s (training only)"},
        "serve_infer_rag": {"seconds": 2254.1, "from": "data/infer/rag/report.json"},
        "score_rag": {"seconds": None, "from": None},
        "download@llm": {"seconds": None, "from": None}}


def test_a_record_keeps_each_stages_report():
    from raglab.experiments.records import stage_reports

    lock = {"stages": {"chunk": {"outs": [{"path": "data/own/chunks"}]},
                       "write_questions": {"outs": [{"path": "data/own/pairs.jsonl"}, {"path": "data/own/questions"}]},
                       "train_embed": {"outs": [{"path": "models/embedder"}]},
                       "score_rag": {"outs": [{"path": "data/score/rag"}]}}}
    files = {"data/own/chunks/report.json": '{"stage": "chunk", "wrote": {"chunks.jsonl": 9}}',
             "data/own/questions/report.json": '{"stage": "write_questions"}', "data/score/rag/report.json": "[]"}
    assert stage_reports(lock, files.get) == {"chunk": files["data/own/chunks/report.json"],
                                              "write_questions": files["data/own/questions/report.json"]}


def test_the_baseline_names_each_records_machine_and_the_stages_run_elsewhere(tmp_path):
    import json

    from raglab.experiments.baseline import machine_lines, render_machines

    xeon = {"cpu": {"model": "Intel Xeon", "cores": 2, "flags": ["amx_bf16"]}, "shared": False}
    record = {**xeon, "source": "stated in 887b99f", "stages": {
        "train_llm": {"seconds": 8071.7, "machine": {**xeon, "shared": True}},
        "serve_infer_math": {"seconds": 300.0}}}
    (tmp_path / "results" / "math").mkdir(parents=True)
    (tmp_path / "results" / "math" / "machine.json").write_text(json.dumps(record))
    lines = machine_lines(str(tmp_path), ["math", "older"])  # a record without machine.json has no line
    assert lines == [("math", "2-core Intel Xeon, AMX, alone; "
                              "train_llm in another run: 2-core Intel Xeon, AMX, shared with other jobs")]
    assert render_machines(lines, markdown=False).splitlines()[2].startswith("math  2-core Intel Xeon")
    assert "- math: 2-core" in render_machines(lines, markdown=True)
    assert render_machines([], markdown=False) == ""
