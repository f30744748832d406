"""Questions a teacher writes about each chunk of the user's documents, and the filters that keep the good ones.

The recipe of LlamaIndex's ``generate_qa_embedding_pairs`` (a teacher reads a chunk and writes the questions it
answers; the pairs train the embedder), without its known failures: the reply is parsed line by line and a
preamble ("Here are two questions…") is never a question; at most ``per_chunk`` questions are kept however many
the teacher writes; the prompt asks in the chunk's own language (``prompts.en`` / ``prompts.zh``) and a question in
the wrong language is dropped. Then the filters, each counted: a question that copies a sentence of the chunk;
an answer (when asked for) that is not a span of the chunk; a question whose chunk the first-stage retriever
does not rank in its top ``round_trip_top_k`` (round-trip consistency: Promptagator, InPars); a near-duplicate of
an earlier question.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from raglab.core.prompts import chat_messages
from raglab.data.chunks import Chunk, language, near_duplicates
from raglab.serving.client import Reply, Request

STATUSES = ("kept", "request_error", "unparsed", "wrong_language", "copies_chunk", "answer_not_in_chunk",
            "self_reference", "round_trip", "near_duplicate")

_NUMBERING = re.compile(r"^\s*(?:[-*•·]+|\(?\d{1,2}[.)、:：]|\(?[a-zA-Z][.)]|[Qq](?:uestion)?\s*\d*\s*[:：.]|"
                        r"问题?\s*\d*\s*[:：.、]|\*\*)\s*")
# a label before the question that echoes the prompt ("Here are the questions: ...?", "查阅这份文档的人会问：...？")
_LABEL = re.compile(r"^[^?？:：\n]{0,30}(?:问|问题|[Qq]uestions?)\s*[:：]\s*")
_ANSWER = re.compile(r"^\s*(?:\*\*)?(?:[Aa](?:nswer)?|答案?)\s*\d*\s*[:：]\s*(?:\*\*)?\s*")
_QUESTION_END = ("?", "？")


@dataclass
class Candidate:
    """One question parsed from a reply, with its chunk, its answer (when asked for) and its fate."""
    chunk: Chunk
    question: str
    answer: str | None = None
    status: str = "kept"

    def row(self) -> dict:
        return {"question": self.question, "context": self.chunk.text, "answer": self.answer,
                "chunk_id": self.chunk.id, "source": self.chunk.source, "page": self.chunk.page,
                "status": self.status}


@dataclass
class Outcome:
    candidates: list[Candidate] = field(default_factory=list)
    replies: dict[str, str] = field(default_factory=dict)        # chunk id -> the teacher's reply
    unparsed_chunks: Counter = field(default_factory=Counter)   # why a chunk gave no question


def prompt_messages(chunk: Chunk, prompts: dict[str, str], per_chunk: int, system: str | None) -> list[dict]:
    """The chat turns that ask for ``per_chunk`` questions about ``chunk``, in its language's prompt."""
    template = prompts.get(chunk.lang) or prompts["en"]
    return chat_messages(system, template.format(passage=chunk.text, n=per_chunk))


def requests(chunks: Sequence[Chunk], prompts: dict[str, str], per_chunk: int, system: str | None,
             seed: int) -> list[Request]:
    return [Request(prompt_messages(c, prompts, per_chunk, system), sample=0, seed=seed) for c in chunks]


def _strip(line: str) -> str:
    line = line.strip().strip("*").strip()
    while (stripped := _NUMBERING.sub("", line, count=1)) != line:
        line = stripped.strip()
    line = _LABEL.sub("", line, count=1)
    return line.strip().strip('"“”').strip()


def parse_reply(text: str, per_chunk: int, with_answers: bool) -> list[tuple[str, str | None]]:
    """``(question, answer)`` pairs of a reply: lines that end as a question (after numbering and bullets are
    stripped), each answer from the line after its question that starts with ``A:`` / ``Answer:`` / ``答:``;
    anything else (a preamble, a closing remark, an explanation) is ignored. At most ``per_chunk``."""
    out: list[tuple[str, str | None]] = []
    lines = [line for line in (text or "").splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if _ANSWER.match(line):
            continue
        question = _strip(line)
        if not question.endswith(_QUESTION_END) or len(question) < 4:
            continue
        answer = None
        if with_answers and i + 1 < len(lines) and _ANSWER.match(lines[i + 1]):
            answer = _ANSWER.sub("", lines[i + 1]).strip().strip('"“”').strip() or None
        out.append((question, answer))
        if len(out) == per_chunk:
            break
    return out


def _normal(text: str) -> str:
    return re.sub(r"[\W_]+", " ", text.casefold()).strip()


def copies_chunk(question: str, chunk: str, min_chars: int = 20) -> bool:
    """The question, without its question mark, is a run of the chunk's own text (of at least ``min_chars``): the
    teacher copied a sentence instead of asking about it."""
    q = _normal(question)
    return len(q) >= min_chars and q in _normal(chunk)


# a question that points at its passage instead of naming what it asks about ("the passage", "这段文字"): it means
# nothing to someone searching the documents. Chinese by whole phrases (a bare 本文 is inside 日本文化).
_SELF_REFERENCE = re.compile(r"\b(?:the|this|that|above|given)\s+(?:passage|document|text|excerpt|paragraph)\b|"
                             r"这段文字|这段话|这段内容|这篇文章|这篇文字|该文段|此文段|文中提到|文中所述|上述文字|这份文档|本文档",
                             re.IGNORECASE)


def refers_to_passage(question: str) -> bool:
    return bool(_SELF_REFERENCE.search(question))


def answer_in_chunk(answer: str, chunk: str) -> bool:
    """The answer is a span of the chunk (case, spacing and punctuation aside)."""
    a = _normal(answer)
    return bool(a) and a in _normal(chunk)


def parse_all(chunks: Sequence[Chunk], replies: Sequence[Reply], per_chunk: int, with_answers: bool,
              drop_self_references: bool = False) -> Outcome:
    """Every reply parsed and checked against its own chunk (language, copy, answer span) and, if asked, for a
    question that points at "the passage" instead of naming its subject."""
    outcome = Outcome()
    for chunk, reply in zip(chunks, replies, strict=True):
        if not reply.ok:
            outcome.unparsed_chunks["request_error"] += 1
            continue
        outcome.replies[chunk.id] = reply.content
        parsed = parse_reply(reply.content, per_chunk, with_answers)
        if not parsed:
            outcome.unparsed_chunks["unparsed"] += 1
            continue
        for question, answer in parsed:
            c = Candidate(chunk, question, answer)
            if language(question) != chunk.lang:
                c.status = "wrong_language"
            elif copies_chunk(question, chunk.text):
                c.status = "copies_chunk"
            elif with_answers and not (answer and answer_in_chunk(answer, chunk.text)):
                c.status = "answer_not_in_chunk"
            elif drop_self_references and refers_to_passage(question):
                c.status = "self_reference"
            outcome.candidates.append(c)
    return outcome


def round_trip(candidates: Sequence[Candidate], ranked_chunk_ids: Sequence[Sequence[str]], top_k: int) -> None:
    """Drop (status ``round_trip``) each kept candidate whose own chunk is not among the first ``top_k`` of its
    ranking (``ranked_chunk_ids[i]``: the first stage's order of chunk ids for candidate i's question)."""
    for c, ranked in zip(candidates, ranked_chunk_ids, strict=True):
        if c.status == "kept" and c.chunk.id not in list(ranked)[:top_k]:
            c.status = "round_trip"


def drop_near_duplicates(candidates: Sequence[Candidate], threshold: float) -> None:
    """Among the kept candidates, a question that nearly repeats an earlier one is dropped (``near_duplicate``)."""
    kept = [c for c in candidates if c.status == "kept"]
    for c, earlier in zip(kept, near_duplicates([c.question for c in kept], threshold)):
        if earlier is not None:
            c.status = "near_duplicate"


def counts(outcome: Outcome) -> dict[str, int]:
    """How many questions each status holds, and the chunks that gave none."""
    tally = Counter(c.status for c in outcome.candidates)
    return {**{s: tally.get(s, 0) for s in STATUSES if s not in ("request_error", "unparsed")},
            **{f"chunks_{k}": v for k, v in sorted(outcome.unparsed_chunks.items())}}
