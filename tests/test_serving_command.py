"""The serving params become vLLM's command line (no server is started here)."""

from raglab.serving.vllm import server_for


def flags(typed, serving: dict) -> list[str]:
    return server_for("models/base/llm", typed({"serving": serving}).serving, trust_remote_code=False,
                      log_file="vllm.log").command()


def test_serving_params_become_vllm_flags(typed):
    default = flags(typed, {})
    assert "--enforce-eager" not in default and "--trust-remote-code" not in default
    assert default[default.index("--host") + 1] == "127.0.0.1"
    eager = flags(typed, {"enforce_eager": True, "chunked_prefill": False, "max_num_batched_tokens": 2048})
    assert "--enforce-eager" in eager and "--no-enable-chunked-prefill" in eager
    assert eager[eager.index("--max-num-batched-tokens") + 1] == "2048"
    assert flags(typed, {"dtype": "float32"})[default.index("--dtype") + 1] == "float32"
