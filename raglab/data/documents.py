"""A user's own documents (PDF, Markdown, HTML, plain text, Word) read as plain text, ready to be chunked.

Each file becomes one :class:`Document`: its readable text, with paragraphs separated by blank lines (the chunker
splits on them) and, for a PDF, where each page starts, so a chunk can be traced back to its page. Parsing is left
to well-kept libraries: pypdf, BeautifulSoup (lxml), markdown-it-py (Markdown is rendered to HTML and read like
HTML), python-docx and charset-normalizer. A file that gives no text (corrupt, encrypted, empty, in an unknown
encoding) is named in one log line, counted under ``dropped`` in the stage report, and the rest goes on; a folder
with nothing usable is an error naming the folder and the globs.
"""

from __future__ import annotations

import bisect
import codecs
import logging
import os
import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from raglab.core.formats import DataError
from raglab.core.report import StageReport

log = logging.getLogger("raglab")

DEFAULT_GLOBS = ("**/*.pdf", "**/*.md", "**/*.markdown", "**/*.html", "**/*.htm", "**/*.txt", "**/*.docx")

# file suffix (lower case) -> format; a matched file with another suffix is dropped as `unsupported`
FORMATS = {".pdf": "pdf", ".md": "markdown", ".markdown": "markdown", ".html": "html", ".htm": "html",
           ".txt": "text", ".docx": "docx"}


@dataclass(frozen=True)
class Document:
    source: str  # the file's path relative to the folder, posix form
    text: str  # the whole readable text; pages joined with "\n\n"; paragraphs separated by blank lines
    page_starts: tuple[int, ...] = (0,)  # offset in `text` where each page starts (PDF: one per page)
    format: str = "text"  # "pdf" | "markdown" | "html" | "text" | "docx"

    def page_of(self, offset: int) -> int:
        """The 1-based page holding character ``offset`` (a page without text shares the next page's start and is
        never the answer)."""
        if not 0 <= offset <= len(self.text):
            raise ValueError(f"{self.source}: offset {offset} is outside the text (0..{len(self.text)})")
        return bisect.bisect_right(self.page_starts, offset)


class Unreadable(Exception):
    """A file that gives no text; ``reason`` is the short name counted in the stage report (``file_<reason>``)."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


# --- text normalisation -----------------------------------------------------------------------------------------

_INVISIBLE = dict.fromkeys(map(ord, "\ufeff\u200b\u00ad"))  # BOM, zero-width space, soft hyphen
_SPACES = re.compile(r"[^\S\n]+")  # any whitespace but a line break (tabs, NBSP, the ideographic space U+3000)


def clean(text: str) -> str:
    """NFC, no control characters, runs of spaces collapsed, lines trimmed, at most one blank line in a row.

    NFC, not NFKC: NFKC would turn the full-width ``！？`` of Chinese text into ASCII ``!?``, which the chunker
    treats differently (an ASCII ``!`` ends a sentence only before whitespace).
    """
    text = unicodedata.normalize("NFC", text).translate(_INVISIBLE)
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\f", "\n").replace("\v", "\n")
    text = "".join(c for c in text if c == "\n" or c == "\t" or unicodedata.category(c) != "Cc")
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def decode(raw: bytes) -> str:
    """Bytes of a text file as text: UTF-8 (with or without a BOM), UTF-16/32 with a BOM, else the encoding
    charset-normalizer finds. Raises Unreadable when none gives sensible text (a binary file, say)."""
    for bom, codec in ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
                       (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")):
        if raw.startswith(bom):  # UTF-32 LE before UTF-16 LE: its BOM starts with UTF-16 LE's
            try:
                return raw.decode(codec)
            except UnicodeDecodeError as e:
                raise Unreadable("unreadable", f"starts with a {codec} byte order mark but is not {codec} "
                                               f"(byte {e.start})") from None
    try:
        text = raw.decode("utf-8")
        if "\x00" not in text:  # UTF-16 without a BOM is valid UTF-8 when it is ASCII: NULs give it away
            return text
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(raw).best()
    if best is None or _binary(str(best)):
        raise Unreadable("unreadable", "not UTF-8, UTF-16 or any encoding charset-normalizer recognises")
    return str(best)


def _binary(text: str) -> bool:
    """More than 1% control characters (other than line breaks and tabs) or replacement marks: not text."""
    bad = sum(1 for c in text if c == "\ufffd" or (c not in "\n\r\t\f" and unicodedata.category(c) == "Cc"))
    return bad > 0.01 * len(text)


# --- one reader per format: each returns the text of each page --------------------------------------------------

def _pdf(path: Path) -> list[str]:
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError

    try:
        reader = PdfReader(path)
        if reader.is_encrypted:
            try:
                # many "encrypted" PDFs only restrict printing: the empty password opens them
                opened = reader.decrypt("")
            except (DependencyError, NotImplementedError) as e:
                raise Unreadable("encrypted", f"encrypted in a way pypdf cannot open ({e})") from None
            if not opened:
                raise Unreadable("encrypted", "encrypted with a password")
        return [page.extract_text() or "" for page in reader.pages]
    except Unreadable:
        raise
    except FileNotDecryptedError:
        raise Unreadable("encrypted", "encrypted with a password") from None
    except Exception as e:  # noqa: BLE001 - a damaged file surfaces as any of a dozen error types inside pypdf
        raise Unreadable("corrupt", f"not a readable PDF ({type(e).__name__}: {e})") from None


_HTML_DROP = ("head", "script", "style", "noscript", "template", "svg", "nav", "header", "footer", "aside", "form")
_HTML_BLOCKS = frozenset(
    "address article blockquote caption dd details div dl dt figcaption figure h1 h2 h3 h4 h5 h6 hr li main ol p "
    "pre section summary table tr ul".split())
_PARAGRAPH = object()  # marks a block element's edges while walking the tree


def html_text(markup: str | bytes) -> str:
    """The readable text of an HTML page: page furniture (scripts, styles, navigation, header, footer) dropped,
    each block element (paragraph, heading, list item, table row, ...) its own paragraph, table cells on their own
    lines, whitespace collapsed as a browser does except inside ``<pre>``."""
    from bs4 import BeautifulSoup, NavigableString
    from bs4.element import PreformattedString

    soup = BeautifulSoup(markup, "lxml")  # bytes: bs4 finds the encoding (BOM, <meta charset>, detection)
    for tag in soup(_HTML_DROP):
        tag.decompose()
    out: list[str] = []
    stack: list[tuple[object, bool]] = [(soup, False)]  # (node, inside <pre>); a loop, not recursion: no depth limit
    while stack:
        node, pre = stack.pop()
        if node is _PARAGRAPH:
            out.append("\n\n")
        elif isinstance(node, str) and not isinstance(node, NavigableString):  # a line break after a table cell
            out.append(node)
        elif isinstance(node, NavigableString):
            if not isinstance(node, PreformattedString):  # comments, CDATA, doctype
                out.append(str(node) if pre else re.sub(r"\s+", " ", str(node)))
        elif node.name == "br":
            out.append("\n")
        else:
            pre = pre or node.name == "pre"
            children = [(child, pre) for child in node.children]
            if node.name in ("td", "th"):
                children.append(("\n", pre))
            if node.name in _HTML_BLOCKS:
                children = [(_PARAGRAPH, pre), *children, (_PARAGRAPH, pre)]
            stack.extend(reversed(children))
    return "".join(out)


def _html(path: Path) -> list[str]:
    text = html_text(path.read_bytes())
    if _binary(text):
        raise Unreadable("unreadable", "not text (binary, or an encoding the page does not declare)")
    return [text]


def _markdown(path: Path) -> list[str]:
    from markdown_it import MarkdownIt

    return [html_text(MarkdownIt("commonmark").enable("table").render(decode(path.read_bytes())))]


def _text(path: Path) -> list[str]:
    return [decode(path.read_bytes())]


def _docx(path: Path) -> list[str]:
    import docx

    with open(path, "rb") as f:
        # an OLE container: how Word stores a password-protected file
        if f.read(8) == b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1":
            raise Unreadable("encrypted", "a password-protected Word file")
    try:
        document = docx.Document(str(path))
        return ["\n\n".join(_docx_blocks(document))]
    except Exception as e:  # noqa: BLE001 - a damaged file fails in zipfile, lxml or python-docx, each its own way
        raise Unreadable("corrupt", f"not a readable Word file ({type(e).__name__}: {e})") from None


def _docx_blocks(container) -> Iterator[str]:
    """Paragraphs and tables of a document (or a table cell) in order; a table row is one paragraph, a line per
    cell."""
    from docx.table import Table

    for block in container.iter_inner_content():
        if not isinstance(block, Table):
            yield block.text
            continue
        for row in block.rows:
            seen, cells = set(), []
            for cell in row.cells:
                if id(cell._tc) in seen:  # a merged cell appears once per grid column it spans
                    continue
                seen.add(id(cell._tc))
                cells.append("\n".join(_docx_blocks(cell)))
            yield "\n".join(cells)


READERS = {"pdf": _pdf, "markdown": _markdown, "html": _html, "text": _text, "docx": _docx}


# --- the folder -------------------------------------------------------------------------------------------------

def read_document(path: str | os.PathLike, source: str) -> Document:
    """One file as a Document; raises Unreadable saying why it gives no text."""
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise Unreadable("unsupported", f"no reader for '{path.suffix}' files (readers: {', '.join(FORMATS)})")
    try:
        if path.stat().st_size == 0:
            raise Unreadable("empty", "an empty file")
        pages = [clean(page) for page in READERS[fmt](path)]
    except OSError as e:
        raise Unreadable("unreadable", f"cannot be read ({e.strerror or e})") from None
    if not any(pages):
        hint = " (a scanned PDF without a text layer? run OCR first)" if fmt == "pdf" else ""
        raise Unreadable("no_text", f"no text in the file{hint}")
    text, starts, waiting = "", [], 0
    for page in pages:
        if not page:  # a page without text starts where the next page with text does
            waiting += 1
            continue
        text += "\n\n" if text else ""
        starts += [len(text)] * (waiting + 1)
        waiting, text = 0, text + page
    starts += [len(text)] * waiting
    return Document(source=source, text=text, page_starts=tuple(starts), format=fmt)


def matching_files(folder: str | os.PathLike, globs: Sequence[str]) -> list[Path]:
    """The files under ``folder`` that match any of ``globs``, each once, sorted by path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "no such folder (the documents' folder)" if not folder.exists() else "not a folder")
    found: set[Path] = set()
    for pattern in globs:
        try:
            found.update(p for p in folder.glob(pattern) if p.is_file())
        except (ValueError, NotImplementedError) as e:  # an empty or absolute pattern
            raise DataError(folder, f"glob {pattern!r} cannot be used ({e}); globs are relative to the folder") \
                from None
    return sorted(found)


def read_documents(folder: str | os.PathLike, globs: Sequence[str], report: StageReport) -> list[Document]:
    """Every file under ``folder`` matching any of ``globs``, sorted by path, read as a Document.

    Unreadable files are logged in one line each naming the file and why, counted with
    ``report.drop(f"file_{reason}")`` and listed in ``report.extra["dropped_files"]`` (``{source: reason}``);
    ``report.read`` gets the files matched, the documents of each format and their pages. Raises a DataError
    naming the folder and the globs when nothing usable is found.
    """
    files = matching_files(folder, globs)
    documents: list[Document] = []
    dropped: dict[str, str] = {}
    for path in files:
        source = path.relative_to(folder).as_posix()
        try:
            documents.append(read_document(path, source))
        except Unreadable as e:
            log.warning("[%s] dropped %s: %s", report.stage, source, e)
            report.drop(f"file_{e.reason}")
            dropped[source] = e.reason
    report.extra["dropped_files"] = dropped
    report.add_read("files", len(files))
    for fmt in sorted({d.format for d in documents}):
        report.add_read(f"documents_{fmt}", sum(d.format == fmt for d in documents))
    report.add_read("pages", sum(len(d.page_starts) for d in documents))
    if not documents:
        why = f"{len(files)} matching file(s), none readable: {dropped}" if files else "no file matches them"
        raise DataError(folder, f"no usable document for globs {list(globs)} ({why})")
    return documents
