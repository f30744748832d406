"""Stage `build_pairs`: the user's own labelled (question, passage[, answer]) rows in the form the tracks read.

Params `own.pairs`: a CSV/TSV, JSON Lines, Parquet or JSON file of rows with a column mapping (`query`, `passage`,
optional `answer`, `passage_id`, `query_id`), or LlamaIndex's `EmbeddingQAFinetuneDataset` JSON. Writes to --out
`pairs.jsonl` (`question`, `context`, `answer`, `passage_id`, `query_id`: what build_embed_negatives reads as its
source; passages made one line, as a knowledge base holds them), `llamaindex.json` (the same pairs in LlamaIndex's
format, so they move back as they came) and `report.json` (rows read, dropped and why).
"""

from pathlib import Path

import click

from raglab.core.errors import run
from raglab.core.formats import write_jsonl
from raglab.core.report import StageReport
from raglab.data.pairs import Pair, read_pairs, to_llamaindex, write_llamaindex
from raglab.params.loader import load_params


@click.command()
@click.option("--params", "params_file", default="params.yaml", show_default=True)
@click.option("--out", "out_dir", default="data/own/pairs", show_default=True, type=click.Path(file_okay=False))
def main(params_file: str, out_dir: str) -> None:
    spec = load_params(params_file).own.pairs
    out = Path(out_dir)
    with StageReport("build_pairs", out / "report.json") as report:
        pairs = [Pair(" ".join(p.query.split()), " ".join(p.passage.split()), p.passage_id, p.answer, p.query_id)
                 for p in read_pairs(spec.path, spec.columns, report)]
        report.add_wrote("pairs.jsonl", write_jsonl(out / "pairs.jsonl", (
            {"question": p.query, "context": p.passage, "answer": p.answer, "passage_id": p.passage_id,
             "query_id": p.query_id} for p in pairs)))
        write_llamaindex(out / "llamaindex.json", *to_llamaindex(pairs))
        report.add_wrote("llamaindex.json", len(pairs))
        report.extra["passages"] = len({p.passage_id for p in pairs})


if __name__ == "__main__":
    run(main)
