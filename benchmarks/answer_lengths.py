"""Answer lengths per CMRC 2018 split of a mirror: why a model trained on validation's short spans answers the
trial set's long ones badly. Prints questions, passages, answers per question, and the mean / median length in
characters of the first gold answer.

    python benchmarks/answer_lengths.py --mirror ../shared/datasets
"""

from __future__ import annotations

import statistics

import click

from raglab.data.sources import MIRROR_FILES, MIRROR_READERS, mirror_file


@click.command()
@click.option("--mirror", required=True, type=click.Path(file_okay=False, exists=True))
def main(mirror: str) -> None:
    click.echo(f"{'split':<11} {'questions':>9} {'passages':>8} {'answers/q':>9} {'mean chars':>10} {'median':>6}")
    for split in MIRROR_FILES["cmrc2018"]:
        try:
            rows = list(MIRROR_READERS["cmrc2018"](mirror_file(mirror, "cmrc2018", split)))
        except FileNotFoundError:
            continue
        lengths = [len(r["answers"][0].strip()) for r in rows]
        click.echo(f"{split:<11} {len(rows):>9} {len({r['context'] for r in rows}):>8} "
                   f"{statistics.mean(len(r['answers']) for r in rows):>9.2f} {statistics.mean(lengths):>10.1f} "
                   f"{statistics.median(lengths):>6.0f}")


if __name__ == "__main__":
    main()
