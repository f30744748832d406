"""A user's own documents: every format read to clean text, pages traced, bad files named and counted.

Every document is written by the test itself (fpdf2 for PDF, python-docx for Word), with made-up text.
"""

from __future__ import annotations

import logging
import random

import pytest

from raglab.core.formats import DataError
from raglab.core.report import StageReport
from raglab.data.documents import DEFAULT_GLOBS, Document, Unreadable, clean, decode, read_documents

ZH = "青石镇的渡口每天早上六点开船。船票在码头东侧的小屋出售！为什么冬天停航？因为河面会结冰。"


def write_pdf(path, pages: list[str]) -> None:
    """A PDF with one page per string (an empty string makes a page without text)."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    for text in pages:
        pdf.add_page()
        if text:
            pdf.multi_cell(0, 8, text)
    pdf.output(str(path))


def encrypt_pdf(source, target, user_password: str, owner_password: str = "owner") -> None:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(source))
    writer.encrypt(user_password=user_password, owner_password=owner_password)
    with open(target, "wb") as f:
        writer.write(f)


def write_docx(path, paragraphs: list[str], table: list[list[str]] | None = None) -> None:
    import docx

    document = docx.Document()
    document.add_heading(paragraphs[0], level=1)
    for text in paragraphs[1:]:
        document.add_paragraph(text)
    if table:
        grid = document.add_table(rows=len(table), cols=len(table[0]))
        for r, row in enumerate(table):
            for c, value in enumerate(row):
                grid.cell(r, c).text = value
    document.add_paragraph("After the table.")
    document.save(str(path))


@pytest.fixture()
def report() -> StageReport:
    return StageReport("documents")


@pytest.fixture()
def good_folder(tmp_path):
    """One readable file of each format, in nested folders."""
    (tmp_path / "pdf").mkdir()
    write_pdf(tmp_path / "pdf" / "ferry.pdf", ["Page one tells of the ferry.\nIt leaves at six.", "Page two: tickets."])
    (tmp_path / "notes.md").write_text(
        "# Ferry notes\n\nThe *ferry* leaves at **six**.\n\n- first item\n- second item\n\n"
        "```\nprint('kept as text')\n```\n", encoding="utf-8")
    (tmp_path / "page.html").write_text(
        "<html><head><title>Ignored title</title><style>p {color: red}</style></head><body>"
        "<nav><a href='/'>Home</a></nav><h1>Harbour   guide</h1><p>The harbour\n opens <b>early</b>.</p>"
        "<script>var secret = 'not text';</script><ul><li>Boats</li><li>Nets</li></ul>"
        "<table><tr><td>Cell A</td><td>Cell B</td></tr></table><footer>Copyright</footer></body></html>",
        encoding="utf-8")
    write_docx(tmp_path / "report.docx", ["Annual report", "The first paragraph.", "The second paragraph."],
               table=[["Name", "Boats"], ["North", "3"]])
    write_docx(tmp_path / "渡口.docx", ["渡口说明", ZH])
    (tmp_path / "wide.txt").write_text("UTF-16 text with a BOM.\n\nSecond paragraph.", encoding="utf-16")
    (tmp_path / "gb.txt").write_bytes((ZH * 4).encode("gb18030"))
    (tmp_path / "ignored.csv").write_text("not,matched\n", encoding="utf-8")
    return tmp_path


def test_every_format_is_read_to_clean_paragraphs(good_folder, report):
    docs = {d.source: d for d in read_documents(good_folder, DEFAULT_GLOBS, report)}
    assert list(docs) == sorted(["gb.txt", "notes.md", "page.html", "pdf/ferry.pdf", "report.docx", "wide.txt",
                                 "渡口.docx"])

    pdf = docs["pdf/ferry.pdf"]
    assert pdf.format == "pdf" and len(pdf.page_starts) == 2
    assert pdf.text == "Page one tells of the ferry.\nIt leaves at six.\n\nPage two: tickets."

    assert docs["notes.md"].format == "markdown"
    assert docs["notes.md"].text == ("Ferry notes\n\nThe ferry leaves at six.\n\nfirst item\n\nsecond item\n\n"
                                     "print('kept as text')")

    html = docs["page.html"].text
    assert html == "Harbour guide\n\nThe harbour opens early.\n\nBoats\n\nNets\n\nCell A\nCell B"

    assert docs["report.docx"].format == "docx"
    assert docs["report.docx"].text == ("Annual report\n\nThe first paragraph.\n\nThe second paragraph.\n\n"
                                        "Name\nBoats\n\nNorth\n3\n\nAfter the table.")
    assert docs["渡口.docx"].text == f"渡口说明\n\n{ZH}\n\nAfter the table."
    assert "！" in docs["渡口.docx"].text and "？" in docs["渡口.docx"].text  # full-width marks kept (NFC, not NFKC)

    assert docs["wide.txt"].text == "UTF-16 text with a BOM.\n\nSecond paragraph."
    assert docs["gb.txt"].text == ZH * 4  # GB18030, found by charset-normalizer

    assert report.read == {"files": 7, "documents_docx": 2, "documents_html": 1, "documents_markdown": 1,
                           "documents_pdf": 1, "documents_text": 2, "pages": 8}
    assert report.dropped == {} and report.extra["dropped_files"] == {}


def test_page_of_maps_offsets_to_pages_and_skips_pages_without_text(tmp_path, report):
    write_pdf(tmp_path / "a.pdf", ["First page.", "", "Third page."])
    (doc,) = read_documents(tmp_path, ["*.pdf"], report)
    assert doc.text == "First page.\n\nThird page."
    assert doc.page_starts == (0, 13, 13)
    assert [doc.page_of(i) for i in (0, 10, 12, 13, len(doc.text))] == [1, 1, 1, 3, 3]
    with pytest.raises(ValueError, match="a.pdf: offset 99 is outside the text"):
        doc.page_of(99)
    assert Document("x.txt", "plain").page_of(3) == 1


def test_bad_files_are_named_counted_and_skipped(tmp_path, report, caplog):
    write_pdf(tmp_path / "plain.pdf", ["Readable page."])
    encrypt_pdf(tmp_path / "plain.pdf", tmp_path / "locked.pdf", user_password="secret")
    encrypt_pdf(tmp_path / "plain.pdf", tmp_path / "print-only.pdf", user_password="")  # opens with no password
    (tmp_path / "broken.pdf").write_bytes(random.Random(1).randbytes(3000))
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "binary.txt").write_bytes(bytes(range(256)) * 8)
    (tmp_path / "binary.html").write_bytes(random.Random(2).randbytes(3000))
    (tmp_path / "broken.docx").write_bytes(b"PK\x03\x04 not really a zip file")
    write_pdf(tmp_path / "scan.pdf", ["", ""])  # pages with no text layer

    with caplog.at_level(logging.WARNING, logger="raglab"):
        docs = read_documents(tmp_path, ["*.pdf", "*.txt", "*.docx", "*.html"], report)

    assert [d.source for d in docs] == ["plain.pdf", "print-only.pdf"]
    assert docs[1].text == "Readable page."
    assert report.extra["dropped_files"] == {"binary.html": "unreadable", "binary.txt": "unreadable",
                                             "broken.docx": "corrupt",
                                             "broken.pdf": "corrupt", "empty.txt": "empty", "locked.pdf": "encrypted",
                                             "scan.pdf": "no_text"}
    assert report.dropped == {"file_unreadable": 2, "file_corrupt": 2, "file_empty": 1, "file_encrypted": 1,
                              "file_no_text": 1}
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("[documents] dropped")]
    assert len(lines) == 7 and all("\n" not in line for line in lines)
    assert "[documents] dropped locked.pdf: encrypted with a password" in lines
    assert any(line.startswith("[documents] dropped broken.pdf: not a readable PDF") for line in lines)
    assert any("scan.pdf: no text in the file (a scanned PDF" in line for line in lines)
    assert report.read["files"] == 9 and report.read["documents_pdf"] == 2


def test_a_folder_with_nothing_usable_is_an_error_naming_folder_and_globs(tmp_path, report):
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(DataError, match=rf"{tmp_path}: no usable document for globs \['\*\.txt'\] "
                                        r"\(1 matching file\(s\), none readable: \{'empty.txt': 'empty'\}\)"):
        read_documents(tmp_path, ["*.txt"], report)
    with pytest.raises(DataError, match=r"no usable document for globs \['\*\*/\*\.pdf', '\*\*/\*\.md'\] "
                                        r"\(no file matches them\)"):
        read_documents(tmp_path, ["**/*.pdf", "**/*.md"], report)
    with pytest.raises(DataError, match=r"missing: no such folder"):
        read_documents(tmp_path / "missing", DEFAULT_GLOBS, report)
    with pytest.raises(DataError, match=r"glob '/etc/\*' cannot be used"):
        read_documents(tmp_path, ["/etc/*"], report)


def test_a_file_matched_by_two_globs_is_read_once_and_other_suffixes_are_dropped(tmp_path, report):
    (tmp_path / "a.txt").write_text("Alpha.", encoding="utf-8")
    (tmp_path / "b.rtf").write_text("{\\rtf1 Beta.}", encoding="utf-8")
    docs = read_documents(tmp_path, ["*.txt", "**/*.txt", "*.rtf"], report)
    assert [d.source for d in docs] == ["a.txt"]
    assert report.extra["dropped_files"] == {"b.rtf": "unsupported"}


def test_clean_normalises_without_touching_chinese_punctuation():
    messy = "  Cafe\u0301\t\tbar \u00a0baz \n\n\n\nnext\x07 line\r\nend\ufeff "
    assert clean(messy) == "Café bar baz\n\nnext line\nend"
    assert clean("句子。感叹！问题？\u3000下一句") == "句子。感叹！问题？ 下一句"


def test_decode_reads_boms_and_refuses_binary():
    assert decode("\ufeffwith BOM".encode("utf-8")) == "with BOM"
    assert decode(b"\xfe\xff" + "big endian".encode("utf-16-be")) == "big endian"
    assert decode("gewöhnlich".encode("utf-8")) == "gewöhnlich"
    with pytest.raises(Unreadable, match="not UTF-8, UTF-16 or any encoding"):
        decode(bytes(range(256)) * 4)
