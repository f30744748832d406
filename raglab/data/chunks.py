"""Documents into chunks: sentence-bounded windows sized in the embedder's tokens, near-duplicates removed.

A chunk is what the knowledge base holds and what the teacher writes questions about, so its size is set in the
tokens of the embedder that will read it (``own.chunks.size``; all-MiniLM-L6-v2 reads 256 word pieces, more is
cut off). Sentences end at ``.``/``!``/``?`` followed by a space, a line break or (glued by PDF extraction) a
capitalised word, at ``。！？`` (and ``；`` is not an
end), and at every blank line; a chunk packs whole sentences up to the size and the next one starts with the
last sentences of the previous one, up to ``overlap`` tokens. A sentence longer than a chunk is cut on token
boundaries. A chunk's text is its span with every run of whitespace (line breaks included) made one space: one
line of a knowledge base, and the same text whatever spacing a reader left. Every chunk keeps its source file,
page and character span, so a question can be traced to the line it came from. Chunks whose text is nearly the
same as an earlier chunk's (repeated page furniture, boilerplate paragraphs) are dropped: cosine of character
n-gram TF-IDF vectors at or above ``dedup_threshold``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from raglab.data.documents import Document

# A sentence ends after . ! ? (with closing quotes or brackets) before whitespace, or glued to the next
# sentence's capital as PDF extraction leaves it ("obtain.Additionally"; "U.S.C." is not cut), after 。！？ (and
# their closing quotes) anywhere, and at a blank line.
_SENTENCE_END = re.compile(r"""[.!?]["')\]]*(?=\s)|(?<=[a-z])[.!?](?=[A-Z][a-z])|[。！？][」』”’）)]*|\n\s*\n""")
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


@dataclass(frozen=True)
class Chunk:
    id: str
    text: str
    source: str
    page: int
    start: int  # character span in the document's text
    end: int
    tokens: int
    lang: str  # "zh" when a fifth or more of its letters are CJK characters, else "en"

    def row(self) -> dict:
        return asdict(self)


def language(text: str) -> str:
    """``zh`` when at least a fifth of the text's non-space characters are CJK, else ``en``."""
    letters = [c for c in text if not c.isspace()]
    return "zh" if letters and len(_CJK.findall(text)) / len(letters) >= 0.2 else "en"


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` of each sentence of ``text``, whitespace trimmed, empty ones skipped."""
    spans, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        spans.append((start, m.end()))
        start = m.end()
    spans.append((start, len(text)))
    out = []
    for s, e in spans:
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        if e > s:
            out.append((s, e))
    return out


def _cut_long(text: str, span: tuple[int, int], offsets: Callable[[str], list[tuple[int, int]]],
              size: int) -> list[tuple[int, int, int]]:
    """A sentence of more than ``size`` tokens cut into pieces of at most ``size`` tokens: ``(start, end, tokens)``.
    A piece cut inside a word can read as more tokens on its own ("##ism" becomes "ism"): it is counted again and
    shortened until it fits."""
    s, e = span
    marks = offsets(text[s:e])
    pieces, i = [], 0
    while i < len(marks):
        k = min(size, len(marks) - i)
        while True:
            start, end = s + marks[i][0], s + marks[i + k - 1][1]
            n = len(offsets(text[start:end]))
            if n <= size or k == 1:
                break
            k -= 1
        pieces.append((start, end, n))
        i += k
    return pieces


def chunk_document(doc: Document, offsets: Callable[[str], list[tuple[int, int]]], size: int,
                   overlap: int) -> list[Chunk]:
    """``doc`` as chunks of at most ``size`` tokens (``offsets(text)``: the character span of each token), whole
    sentences each, consecutive chunks sharing their boundary sentences up to ``overlap`` tokens."""
    if not 0 <= overlap < size:
        raise ValueError(f"own.chunks.overlap must be >= 0 and below own.chunks.size ({size}), got {overlap}")
    units: list[tuple[int, int, int]] = []  # (start, end, tokens) of each sentence or piece of one
    for span in sentence_spans(doc.text):
        n = len(offsets(doc.text[span[0]:span[1]]))
        if n == 0:
            continue
        units.extend(_cut_long(doc.text, span, offsets, size) if n > size else [(*span, n)])
    chunks, i = [], 0
    while i < len(units):
        j, total = i, 0
        while j < len(units) and total + units[j][2] <= size:
            total += units[j][2]
            j += 1
        while True:  # whole sentences add up; pieces of one cut sentence read together can count otherwise
            start, end = units[i][0], units[j - 1][1]
            text = " ".join(doc.text[start:end].split())  # one line: a knowledge-base line, whatever the spacing
            total = len(offsets(text))
            if total <= size or j - 1 == i:
                break
            j -= 1
        chunk_id = hashlib.sha1(f"{doc.source}\0{start}\0{end}".encode()).hexdigest()[:12]
        chunks.append(Chunk(chunk_id, text, doc.source, doc.page_of(start), start, end, total, language(text)))
        if j == len(units):
            break
        # the next chunk starts with this one's last sentences, up to `overlap` tokens, and leaves room for the next
        # sentence: a chunk of repeated sentences only would add nothing
        back, shared, room = j, 0, min(overlap, size - units[j][2])
        while back - 1 > i and shared + units[back - 1][2] <= room:
            back -= 1
            shared += units[back][2]
        i = back
    return chunks


def near_duplicates(texts: Sequence[str], threshold: float) -> list[int | None]:
    """For each text, the index of an earlier text it nearly repeats (cosine of character 3-5-gram TF-IDF
    vectors >= ``threshold``), or None. Exact repeats (after whitespace and case folding) always count."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    out: list[int | None] = [None] * len(texts)
    seen: dict[str, int] = {}
    for i, t in enumerate(texts):
        key = " ".join(t.casefold().split())
        if key in seen:
            out[i] = seen[key]
        else:
            seen[key] = i
    if threshold >= 1 or len(seen) < 2:
        return out
    firsts = sorted(seen.values())
    vectors = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True).fit_transform(
        [texts[i] for i in firsts])
    similar = (vectors @ vectors.T).tocsr()  # rows are L2-normalised: the cosine
    kept: set[int] = set()
    for row, i in enumerate(firsts):
        lo, hi = similar.indptr[row], similar.indptr[row + 1]
        match = [firsts[c] for c, v in zip(similar.indices[lo:hi], similar.data[lo:hi])
                 if v >= threshold and firsts[c] in kept]
        if match:
            out[i] = min(match)
        else:
            kept.add(i)
    return out
