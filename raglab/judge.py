"""The general RAG metrics: ragas' answer relevancy and faithfulness, judged by an LLM."""

from __future__ import annotations

from pathlib import Path

from .report import StageReport


def judge_scores(judge: dict, judge_model: str | None, serving: dict, embedder_params: dict, rows: list[dict], log_dir: Path,
                 report: StageReport) -> list[dict]:
    """Per row ``{"answer_relevancy": x, "faithfulness": y}`` (None for a verdict the judge failed to give);
    empty dicts when no judge is set."""
    if judge["kind"] == "none":
        return [{} for _ in rows]
    raise NotImplementedError
