"""OpenAI-compatible serving and asking: vLLM as a managed subprocess, the chat client, the response cache."""
