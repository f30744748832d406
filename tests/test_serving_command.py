"""The serving params become vLLM's command line (no server is started here)."""

from raglab.serving.vllm import server_for


def flags(typed, serving: dict) -> list[str]:
    return server_for("models/base/llm", typed({"serving": serving}).serving, trust_remote_code=False,
                      log_file="vllm.log").command()


def test_serving_params_become_vllm_flags(typed):
    default = flags(typed, {})
    assert "--enforce-eager" not in default and "--trust-remote-code" not in default
    assert default[default.index("--host") + 1] == "127.0.0.1"
    eager = flags(typed, {"enforce_eager": True, "chunked_prefill": False, "max_num_batched_tokens": 2048,
                          "max_model_len": 2048})
    assert "--enforce-eager" in eager and "--no-enable-chunked-prefill" in eager
    assert eager[eager.index("--max-num-batched-tokens") + 1] == "2048"
    assert flags(typed, {"dtype": "float32"})[default.index("--dtype") + 1] == "float32"


def test_an_unsplit_prompt_must_fit_one_engine_step(typed):
    """Without chunked prefill vLLM refuses a context longer than its step budget: a params error names both."""
    import pytest

    from raglab.params.schema import ParamsError

    typed({"serving": {"chunked_prefill": False, "max_model_len": 2048, "max_num_batched_tokens": 2048}})
    typed({"serving": {"chunked_prefill": None, "max_model_len": 4096, "max_num_batched_tokens": 2048}})
    with pytest.raises((ParamsError, ValueError), match=r"serving.max_num_batched_tokens \(2048\) must be at least "
                                                        r"serving.max_model_len \(4096\)"):
        typed({"serving": {"chunked_prefill": False, "max_model_len": 4096, "max_num_batched_tokens": 2048}})


def test_a_pooled_server_is_keyed_by_weights_and_options_not_port_name_or_log(typed, tmp_path):
    """serving.keep_alive_s: stages share a server when they serve the same weights the same way, whatever folder,
    served name, port or log file each asks with; another dtype or eager mode is another server."""
    from raglab.serving.pool import pool_key

    def server(serving: dict, **kw):
        return server_for(kw.pop("model", "models/base/llm"), typed({"serving": serving}).serving,
                          trust_remote_code=False, log_file=kw.pop("log_file", "vllm.log"), **kw)

    teacher = server({}, model="models/base/teacher", served_name="teacher", log_file="distill/vllm-teacher.log")
    judge = server({}, served_name="judge")
    judge.port = 43210
    assert pool_key(teacher, "weights-a") == pool_key(judge, "weights-a")
    assert pool_key(teacher, "weights-a") != pool_key(teacher, "weights-b")
    assert pool_key(server({"dtype": "float32"}), "weights-a") != pool_key(judge, "weights-a")
    assert pool_key(server({"enforce_eager": True}), "weights-a") != pool_key(judge, "weights-a")
