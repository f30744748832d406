"""Stage `build_embed_negatives`: contrastive training rows, eval sets and knowledge bases.

The source (params `build_embed_negatives.source`, which dvc.yaml also reads for the stage's command
and dependency) holds question/context pairs: financial-qa-10K, build_sft's `pairs.jsonl` (the
questions of CMRC's training passages, for an embedder tuned on the RAG system's own language and
domain), or write_questions' `pairs.jsonl` (the questions a teacher wrote about the user's chunks). With
`split_by: passage`, all questions of one passage land on the same side of each split. With `train_on:
questions` the training rows are write_questions' pairs instead of the source's training side (the teacher's
questions about training passages, scored on the source's real test questions); pairs whose passage or
question is in the test split are dropped and counted. With `val_from: source` the validation split is the
source's real questions carved from its training side, so a choice among teacher-trained runs is made on questions
none of them trained on (their passages may have been asked about: the chunks are cut from the training side).
Each LlamaIndex-format file in `extra_evals` is one more eval split, with its own corpus as the knowledge base.
"""

from pathlib import Path

import click

from raglab.core.errors import run
from raglab.core.formats import read_jsonl, write_jsonl, write_lines
from raglab.core.report import StageReport
from raglab.data.pairs import llamaindex_pairs, read_llamaindex
from raglab.params.loader import load_params
from raglab.retriever.data import (
    ContrastiveData,
    EvalSplit,
    beir_files,
    eval_split,
    mine_hard_negatives,
    random_negatives,
    split_by,
    QAPair,
    validate_pairs,
)
from raglab.retriever.search import EmbedderConfig, load_embedder


def llamaindex_eval(path: Path, report: StageReport) -> EvalSplit:
    """An eval split from a LlamaIndex ``EmbeddingQAFinetuneDataset`` file: each query with its first relevant
    passage as gold, and the file's whole corpus (each passage on one line) as the knowledge base."""
    queries, corpus, relevant = read_llamaindex(path)
    one_line = {doc_id: " ".join(text.split()) for doc_id, text in corpus.items()}
    pairs, seen = [], set()
    for pair in llamaindex_pairs(queries, one_line, relevant, report):
        if pair.query_id not in seen:  # the first relevant passage of each query
            seen.add(pair.query_id)
            pairs.append(QAPair(pair.query, pair.passage, row=len(pairs) + 1))
    report.add_read(str(path), len(pairs))
    return EvalSplit(pairs, list(dict.fromkeys(text for text in one_line.values() if text)))


@click.command()
@click.option("--params", "params_file", default="params.yaml", show_default=True)
@click.option("--questions", "questions_file", default="data/own/questions/pairs.jsonl", show_default=True,
              type=click.Path(dir_okay=False), help="write_questions' pairs (read with train_on: questions).")
@click.option("--out", "out_dir", default="data/embed", show_default=True, type=click.Path(file_okay=False))
def main(params_file: str, questions_file: str, out_dir: str) -> None:
    """Contrastive rows from the question/context pairs of params build_embed_negatives.source."""
    params = load_params(params_file)
    p = params.build_embed_negatives
    source = p.source
    out = Path(out_dir)
    with StageReport("build_embed_negatives", out / "report.json") as report:
        rows = read_jsonl(source)
        report.add_read(source, len(rows))

        def split(items, share, key):
            return split_by([key(x) for x in items], share, p.seed, p.split_by)

        def carve_val(pairs: list[QAPair]) -> tuple[list[QAPair], EvalSplit]:
            """The pairs left for training, and the validation split carved from them by passage."""
            fit_idx, val_idx = split(pairs, p.val_size, lambda pair: pair.passage)
            return [pairs[i] for i in fit_idx], eval_split([pairs[i] for i in val_idx])

        train_idx, test_idx = split(rows, p.test_size, lambda r: str(r.get("context")))
        train = validate_pairs(rows, train_idx, report)
        test = eval_split(validate_pairs(rows, test_idx, report))
        splits = {"test": test}
        if p.val_size and p.val_from == "source":  # real questions to choose on, none of them trained on
            _, splits["val"] = carve_val(train)
        if p.train_on == "questions":
            own = read_jsonl(questions_file)
            report.add_read(questions_file, len(own))
            tested, asked = set(test.kb), {pair.query for pair in test.pairs}
            train = validate_pairs(own, range(len(own)), report)
            report.drop("questions_passage_in_test", sum(pair.passage in tested for pair in train))
            report.drop("questions_question_in_test", sum(pair.query in asked for pair in train
                                                              if pair.passage not in tested))
            train = [pair for pair in train if pair.passage not in tested and pair.query not in asked]
            if "val" in splits:
                validated = {pair.query for pair in splits["val"].pairs}
                report.drop("questions_question_in_val", sum(pair.query in validated for pair in train))
                train = [pair for pair in train if pair.query not in validated]
        for file in sorted(Path(p.extra_evals).glob("*.json")):
            if file.stem in ("test", "val"):
                raise click.ClickException(f"{file}: an extra eval set cannot be named {file.stem!r} (a split of "
                                           "the source has that name): rename the file")
            splits[file.stem] = llamaindex_eval(file, report)
        if p.val_size and p.val_from == "training":
            train, splits["val"] = carve_val(train)

        data = ContrastiveData(train)
        if p.negatives == "random":
            data.negatives = random_negatives(train, p.num_negatives, p.seed)
        elif p.negatives == "hard":
            embedder = load_embedder(EmbedderConfig.of(params.embedder))
            data.negatives, stats = mine_hard_negatives(
                train, embedder, p.num_negatives, p.hard_negative_ranks, p.seed, p.hard_negative_max_ratio
            )
            report.extra["hard_negatives"] = stats
        else:
            raise click.BadParameter(f"negatives must be 'random' or 'hard', got {p.negatives!r}")

        prompt = params.embedder.query_instruction or ""
        report.add_wrote("train.jsonl", write_jsonl(out / "train.jsonl", data.rows(prompt)))
        for name, split in splits.items():
            report.add_wrote(f"{name}/eval.jsonl", write_jsonl(out / name / "eval.jsonl", split.rows()))
            report.add_wrote(f"{name}/kb.txt", write_lines(out / name / "kb.txt", split.kb_lines(p.kb_lines)))
        queries, corpus, qrels = beir_files(test)
        write_jsonl(out / "beir" / "queries.jsonl", queries)
        write_jsonl(out / "beir" / "corpus.jsonl", corpus)
        write_lines(out / "beir" / "qrels" / "test.tsv", qrels)


if __name__ == "__main__":
    run(main)
