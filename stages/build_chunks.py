"""Stage `build_chunks`: the user's documents as chunks sized in the embedder's tokens.

Documents come from params `own.documents`: a folder of files (PDF, Markdown, HTML, text, Word; globs), or a
table's passages grouped into documents (financial-qa: one document per filing, only the rows on the training
side of build_embed_negatives' split, so that nothing tested is asked about). Writes to --out `chunks.jsonl`
(id, text, source, page, character span, tokens, language) and `report.json` (documents and pages read, files
and chunks dropped and why).
"""

from collections import defaultdict
from pathlib import Path

import click

from raglab.core.errors import run
from raglab.core.formats import read_jsonl, write_jsonl
from raglab.core.report import StageReport
from raglab.data.chunks import chunk_document, near_duplicates
from raglab.data.documents import Document, read_documents
from raglab.params.loader import load_params
from raglab.params.own import PassageTable
from raglab.params.pipeline import BuildEmbedNegatives
from raglab.retriever.data import split_by
from raglab.retriever.search import EmbedderConfig


def passage_documents(path: str, spec: PassageTable, rows: list[dict], keep, report: StageReport) -> list[Document]:
    """The distinct passages of the table's rows ``keep``, grouped into one document per value of
    ``spec.group_by`` (first-seen order), each passage a paragraph."""
    groups: dict[str, dict[str, None]] = defaultdict(dict)
    for i in keep:
        row = rows[i]
        text = str(row.get(spec.text) or "").strip()
        if not text:
            report.drop("passage_empty")
            continue
        missing = [c for c in spec.group_by if c not in row]
        if missing:
            raise click.ClickException(f"{path}: row {i + 1}: no field {missing[0]!r} "
                                       f"(own.documents.passages.group_by); the row has {sorted(row)}")
        groups["/".join(str(row[c]) for c in spec.group_by)][text] = None
    return [Document(name, "\n\n".join(texts)) for name, texts in groups.items()]


def train_side(rows: list[dict], spec: PassageTable, split: BuildEmbedNegatives, report: StageReport) -> list[int]:
    """The rows on the training side of build_embed_negatives' seeded split of the same table, without those whose
    passage a test-side row also has (a passage asked about must never be a test passage)."""
    train, test = split_by([str(r.get("context")) for r in rows], split.test_size, split.seed, split.split_by)
    report.drop("rows_on_the_test_side", len(test))
    tested = {str(rows[i].get(spec.text) or "").strip() for i in test}
    keep = [i for i in train if str(rows[i].get(spec.text) or "").strip() not in tested]
    report.drop("rows_whose_passage_is_also_tested", len(train) - len(keep))
    return keep


@click.command()
@click.option("--params", "params_file", default="params.yaml", show_default=True)
@click.option("--out", "out_dir", default="data/own/chunks", show_default=True, type=click.Path(file_okay=False))
def main(params_file: str, out_dir: str) -> None:
    params = load_params(params_file)
    docs_spec, spec = params.own.documents, params.own.chunks
    out = Path(out_dir)
    with StageReport("build_chunks", out / "report.json") as report:
        if docs_spec.passages is None:
            documents = read_documents(docs_spec.path, docs_spec.globs, report)
        else:
            table = docs_spec.passages
            rows = read_jsonl(docs_spec.path)
            report.add_read(docs_spec.path, len(rows))
            keep = train_side(rows, table, params.build_embed_negatives, report) if table.train_side_only else range(
                len(rows))
            documents = passage_documents(docs_spec.path, table, rows, keep, report)
            report.add_read("documents", len(documents))

        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(EmbedderConfig.of(params.embedder).local_path())

        def offsets(text: str) -> list[tuple[int, int]]:
            return tokenizer(text, add_special_tokens=False, return_offsets_mapping=True,
                             verbose=False)["offset_mapping"]

        chunks = [c for doc in documents for c in chunk_document(doc, offsets, spec.size, spec.overlap)]
        short = [c for c in chunks if c.tokens < spec.min_tokens]
        report.drop("chunk_too_short", len(short))
        chunks = [c for c in chunks if c.tokens >= spec.min_tokens]
        repeats = near_duplicates([c.text for c in chunks], spec.dedup_threshold)
        report.drop("chunk_near_duplicate", sum(r is not None for r in repeats))
        chunks = [c for c, r in zip(chunks, repeats) if r is None]
        report.extra.update({
            "documents": len(documents),
            "pages": sum(len(d.page_starts) for d in documents),
            "chunks": len(chunks),
            "chunks_by_language": {lang: sum(c.lang == lang for c in chunks) for lang in sorted({c.lang for c in chunks})},
            "tokens_per_chunk_mean": round(sum(c.tokens for c in chunks) / len(chunks), 1) if chunks else None,
        })
        report.add_wrote("chunks.jsonl", write_jsonl(out / "chunks.jsonl", (c.row() for c in chunks)))


if __name__ == "__main__":
    run(main)
