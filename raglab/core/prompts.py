"""The prompt template and chat format, shared by training and inference.

One source of truth: build_sft renders training records with these functions,
train_llm feeds them through the model's own chat template, and serve_infer
sends exactly the same messages to the OpenAI-compatible server.
"""

from __future__ import annotations

from string import Formatter

REQUIRED_FIELDS = {"context", "question"}


def check_template(template: str) -> None:
    fields = {name for _, name, _, _ in Formatter().parse(template) if name}
    if fields != REQUIRED_FIELDS:
        raise ValueError(f"prompt template must use exactly the fields {sorted(REQUIRED_FIELDS)}, uses {sorted(fields)}")


def render(template: str, context: str, question: str) -> str:
    return template.format(context=context, question=question)


def render_question(prompt: str, question: str) -> str:
    """Fill the ``{question}`` field of a maths prompt; other braces are literal (LaTeX: ``\\boxed{}``)."""
    if "{question}" not in prompt:
        raise ValueError(f"the prompt must contain {{question}}, got {prompt!r}")
    return prompt.replace("{question}", question)


def chat_messages(system: str | None, user: str) -> list[dict[str, str]]:
    """The conversation sent to the model: optional system prompt, then the user turn."""
    messages = [{"role": "system", "content": system}] if system else []
    return messages + [{"role": "user", "content": user}]
