"""Documents into chunks (raglab.data.chunks, stages/build_chunks): sentence ends in English and Chinese, chunks
never above their size in tokens, overlap by whole sentences, pages traced, near repeats dropped, and the stage
end to end on the synthetic mirror's documents plus a PDF, a Word file and a corrupt PDF written here."""

from __future__ import annotations

import json
import random
import re
import shutil

import pytest
import yaml
from test_documents import write_docx, write_pdf

from raglab.data.chunks import chunk_document, language, near_duplicates, sentence_spans
from raglab.data.documents import Document, read_document


def words(text: str) -> list[tuple[int, int]]:
    """A whitespace tokenizer: one token per run of non-space characters."""
    return [m.span() for m in re.finditer(r"\S+", text)]


def characters(text: str) -> list[tuple[int, int]]:
    """A character tokenizer: one token per non-space character (as BERT reads Chinese)."""
    return [(i, i + 1) for i, c in enumerate(text) if not c.isspace()]


def sentences(text: str) -> list[str]:
    return [text[s:e] for s, e in sentence_spans(text)]


def test_english_sentences_end_before_a_space_or_glued_to_a_capital_not_inside_numbers_or_initials():
    assert sentences("Revenue rose 4.2% to $7.1 billion in 2023. It fell! Did it? Yes") == \
        ["Revenue rose 4.2% to $7.1 billion in 2023.", "It fell!", "Did it?", "Yes"]
    # PDF extraction glues sentences: "obtain.Additionally" is two, "U.S.C." is one abbreviation
    assert sentences("licences we could not obtain.Additionally, we filed under 15 U.S.C. Then it ended") == \
        ["licences we could not obtain.", "Additionally, we filed under 15 U.S.C.", "Then it ended"]
    assert sentences("Was it sold?Yes, in May!Then nothing") == ["Was it sold?", "Yes, in May!", "Then nothing"]
    assert sentences('He said "stop." Then (twice.) he left.') == ['He said "stop."', "Then (twice.)", "he left."]
    assert sentences("") == [] and sentences("  \n\n ") == []


def test_chinese_sentences_end_at_full_width_marks_with_or_without_closing_quotes():
    assert sentences("渡口六点开船。船票在小屋出售！冬天停航吗？停航") == ["渡口六点开船。", "船票在小屋出售！", "冬天停航吗？", "停航"]
    assert sentences("他说：“好。”然后走了。她问：「真的吗？」是的！") == ["他说：“好。”", "然后走了。", "她问：「真的吗？」", "是的！"]
    assert sentences("第一条；第二条。") == ["第一条；第二条。"]  # a semicolon does not end a sentence
    assert sentences("Zephyr Motors在2023年增长了。Harbor Retail没有") == ["Zephyr Motors在2023年增长了。", "Harbor Retail没有"]


def test_a_blank_line_ends_a_sentence_and_a_single_line_break_does_not():
    assert sentences("Results\n\nA paragraph without a stop\n  \n A line broken\nin the middle. Next one.\nLast") == \
        ["Results", "A paragraph without a stop", "A line broken\nin the middle.", "Next one.", "Last"]
    assert sentences("标题\n\n正文没有句号") == ["标题", "正文没有句号"]


def random_text(rng: random.Random, n_sentences: int, chinese: bool) -> str:
    """Sentences of 1 to 40 tokens (words, or Chinese characters), paragraphs and page-like blank lines."""
    parts = []
    for _ in range(n_sentences):
        length = rng.choice([1, 2, 3, 5, 8, 13, 21, 40])
        if chinese:
            parts.append("".join(rng.choice("渡口每天早上六点开船票在码头东侧的小屋出售冬季停航河面结冰") for _ in range(length))
                         + rng.choice(["。", "！", "？", "。”"]))
        else:
            parts.append(" ".join(rng.choice(["revenue", "Zephyr", "rose", "$4.2", "billion", "in", "2023", "the"])
                                  for _ in range(length)) + rng.choice([".", "!", "?"]))
        parts.append(rng.choice([" ", " ", "\n", "\n\n"]) if not chinese else rng.choice(["", "", "\n\n"]))
    return "".join(parts)


@pytest.mark.parametrize("chinese", [False, True], ids=["words", "characters"])
def test_chunks_never_exceed_their_size_and_cover_every_sentence(chinese):
    offsets = characters if chinese else words
    rng = random.Random(3)
    for trial in range(30):
        doc = Document("doc.txt", random_text(rng, rng.randint(1, 25), chinese))
        units = sentence_spans(doc.text)
        for size, overlap in [(8, 0), (8, 3), (16, 5), (40, 12), (64, 63)]:
            chunks = chunk_document(doc, offsets, size, overlap)
            assert chunks, (trial, size)
            covered = set()
            for k, c in enumerate(chunks):
                assert 1 <= c.tokens <= size and c.tokens == len(offsets(c.text)), (trial, size, c)
                assert "\n" not in c.text and "  " not in c.text and c.text == c.text.strip()  # one line
                assert c.text == " ".join(doc.text[c.start:c.end].split())
                # (a piece of a cut sentence can be its closing marks only: no letters, so not Chinese)
                assert c.lang == ("zh" if chinese and re.search("[\u4e00-\u9fff]", c.text) else "en")
                assert c.source == "doc.txt" and c.page == 1
                if k:
                    assert c.end > chunks[k - 1].end, "a chunk of repeated sentences only"
                    assert c.start > chunks[k - 1].start
                covered.update(range(c.start, c.end))
            for s, e in units:  # every sentence is in some chunk
                assert all(i in covered for i in range(s, e) if not doc.text[i].isspace()), (trial, size)
            assert len({c.id for c in chunks}) == len(chunks)


def test_overlap_repeats_whole_sentences_up_to_overlap_tokens():
    four = ["a1 a2 a3 a4.", "b1 b2 b3 b4.", "c1 c2 c3 c4.", "d1 d2 d3 d4.", "e1 e2 e3 e4."]
    doc = Document("d.txt", " ".join(four))
    texts = lambda size, overlap: [c.text for c in chunk_document(doc, words, size, overlap)]  # noqa: E731
    assert texts(12, 0) == [" ".join(four[:3]), " ".join(four[3:])]
    assert texts(12, 3) == [" ".join(four[:3]), " ".join(four[3:])]  # a 4-token sentence does not fit in 3
    assert texts(12, 4) == [" ".join(four[:3]), " ".join(four[2:])]  # one sentence repeated
    assert texts(12, 8) == [" ".join(four[:3]), " ".join(four[1:4]), " ".join(four[2:])]  # two repeated
    # the overlap leaves room for a new sentence: never a chunk of repeated sentences only
    doc = Document("d.txt", "a b c d e. f g h i j. k l m n o p q r.")
    assert [c.text for c in chunk_document(doc, words, 10, 5)] == ["a b c d e. f g h i j.", "k l m n o p q r."]
    with pytest.raises(ValueError, match="overlap"):
        chunk_document(doc, words, 10, 10)


def test_a_sentence_longer_than_a_chunk_is_cut_on_token_boundaries():
    long = " ".join(f"w{i}" for i in range(25)) + "."
    doc = Document("d.txt", f"Before it. {long} After it.")
    chunks = chunk_document(doc, words, 10, 3)
    assert [c.text for c in chunks] == ["Before it.", " ".join(f"w{i}" for i in range(10)),
                                        " ".join(f"w{i}" for i in range(10, 20)),
                                        " ".join(f"w{i}" for i in range(20, 25)) + ". After it."]
    assert [c.tokens for c in chunks] == [2, 10, 10, 7]  # pieces of 10 tokens: nothing repeated, nothing lost
    chinese = Document("z.txt", "开" * 25 + "。")
    assert [c.tokens for c in chunk_document(chinese, characters, 10, 2)] == [10, 10, 6]


def test_real_minilm_tokenizer_keeps_every_chunk_within_size(minilm_dir):
    """Counted with the tokenizer the embedder reads with; a sentence cut inside a word ("##ism" read alone as
    "ism") is counted again, so no chunk is longer than the embedder reads."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm_dir)

    def offsets(text: str) -> list[tuple[int, int]]:
        return tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)["offset_mapping"]

    rng = random.Random(5)
    long = " ".join(rng.choice(["antidisestablishmentarianism", "unbelievably", "reorganisation", "Zephyr", "Motors'",
                                "4,321.5", "hyper-competitive", "pneumonoultramicroscopic"]) for _ in range(80)) + "."
    text = ("Zephyr Motors reported revenue of $4.2 billion for fiscal 2023. " + long + "\n\n"
            + "青石镇的渡口每天早上六点开船。船票在码头东侧的小屋出售！为什么冬天停航？因为河面会结冰。" * 3)
    for size in range(5, 41):
        chunks = chunk_document(Document("d.md", text), offsets, size, size // 4)
        assert len(chunks) > 3
        for c in chunks:
            assert len(tokenizer(c.text, add_special_tokens=False)["input_ids"]) == c.tokens <= size, (size, c.text)
        assert {c.lang for c in chunks} == {"en", "zh"}


def test_page_numbers_of_a_two_page_pdf(tmp_path):
    write_pdf(tmp_path / "report.pdf", ["Page one tells of the ferry. It leaves at six. The fare is two coins.",
                                        "Page two tells of the tickets. They are sold at the pier."])
    doc = read_document(tmp_path / "report.pdf", "report.pdf")
    assert len(doc.page_starts) == 2
    chunks = chunk_document(doc, words, 9, 0)
    assert [(c.page, c.text) for c in chunks] == [
        (1, "Page one tells of the ferry."), (1, "It leaves at six. The fare is two coins."),
        (2, "Page two tells of the tickets."), (2, "They are sold at the pier.")]
    assert all(c.source == "report.pdf" for c in chunks)


def test_language_by_share_of_chinese_characters():
    assert language("Zephyr Motors reported revenue.") == "en"
    assert language("渡口每天早上六点开船。") == "zh"
    assert language("Zephyr Motors在2023年的收入是多少？") == "zh"  # names and numbers inside Chinese
    assert language("Zephyr Motors reported revenue of $4.2 billion (渡口).") == "en"
    assert language("") == "en"


def test_near_repeats_exact_near_and_distinct():
    texts = ["Zephyr Motors reported total revenue of $4.2 billion for fiscal 2023, driven by higher volumes.",
             "Harbor Retail opened 48 new stores in 2023, most of them in the Midwest.",
             "  zephyr motors reported total revenue of $4.2 billion for fiscal 2023,\ndriven by higher volumes.",
             "Zephyr Motors reported total revenue of $4.3 billion for fiscal 2023, driven by higher volumes.",
             "Lumen Optics spent $46 million on research and development in 2022.",
             "青石镇的渡口每天早上六点开船。",
             "青石镇的渡口每天早上六点开船。"]
    assert near_duplicates(texts, 0.9) == [None, None, 0, 0, None, None, 5]
    assert near_duplicates(texts, 1.0) == [None, None, 0, None, None, None, 5]  # exact repeats only
    assert near_duplicates(texts[:1], 0.5) == [None] and near_duplicates([], 0.9) == []


def test_build_chunks_on_the_mirror_documents_names_a_corrupt_file_and_goes_on(mirror, tmp_path, params, minilm_dir):
    from click.testing import CliRunner
    from transformers import AutoTokenizer

    from raglab.core.formats import read_jsonl
    from stages import build_chunks

    folder = tmp_path / "documents"
    shutil.copytree(mirror / "documents", folder)
    (folder / "annual").mkdir()
    write_pdf(folder / "annual" / "ferry-report.pdf",
              ["The Qingshi ferry carried 41,000 passengers in 2023, most of them between May and September. "
               "Tickets are sold at the east pier from six in the morning until the last crossing.",
               "The ferry company owns three boats, the oldest of which was built in 1987 in a Shanghai yard. "
               "A fourth boat has been ordered and should arrive before the summer season of 2025. "
               "Fares rose by ten percent in 2023, the first increase since the bridge opened upstream. "
               "In winter the river freezes and the ferry stops for six weeks, usually from January."])
    write_docx(folder / "board-minutes.docx", ["Board minutes", "The board of Zephyr Motors approved a new plant "
                                               "in Ohio. Construction starts in the spring of 2024."])
    (folder / "broken.pdf").write_bytes(random.Random(1).randbytes(3000))
    params = json.loads(json.dumps(params))
    params["embedder"].update(model=minilm_dir, revision=None, pooling="mean", query_instruction=None)
    params["own"]["documents"]["path"] = str(folder)
    params["own"]["chunks"].update(size=64, overlap=16, min_tokens=4)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params, allow_unicode=True), encoding="utf-8")

    result = CliRunner().invoke(build_chunks.main, ["--params", str(params_file), "--out", str(tmp_path / "out")],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["dropped_files"] == {"broken.pdf": "corrupt"}
    assert report["dropped"]["file_corrupt"] == 1
    assert report["read"]["files"] == 7 and report["documents"] == 6
    assert report["pages"] == 7  # the PDF's two pages, one for every other file
    chunks = read_jsonl(tmp_path / "out" / "chunks.jsonl")
    assert report["chunks"] == len(chunks) == report["wrote"]["chunks.jsonl"]
    sources = {c["source"] for c in chunks}
    assert sources == {"annual/ferry-report.pdf", "board-minutes.docx", "harbor-retail-2023.html",
                       "lumen-optics-2022.txt", "zephyr-motors-2023.md", "人物介绍.txt"}
    assert {c["lang"] for c in chunks if c["source"] == "人物介绍.txt"} == {"zh"}
    assert {c["lang"] for c in chunks if c["source"] != "人物介绍.txt"} == {"en"}
    assert report["chunks_by_language"] == {"en": sum(c["lang"] == "en" for c in chunks),
                                            "zh": sum(c["lang"] == "zh" for c in chunks)}
    assert {c["page"] for c in chunks if c["source"].endswith(".pdf")} == {1, 2}
    assert any("winter" in c["text"] and c["page"] == 2 for c in chunks)  # page 2 is longer than a chunk
    assert any("Construction starts in the spring of 2024." in c["text"] for c in chunks)
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir)
    for c in chunks:
        assert len(tokenizer(c["text"], add_special_tokens=False)["input_ids"]) == c["tokens"] <= 64
        assert "\n" not in c["text"] and "<" not in c["text"]  # one line, no markup
    assert len({c["id"] for c in chunks}) == len(chunks)
    assert len({c["text"] for c in chunks}) == len(chunks)
