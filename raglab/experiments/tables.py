"""README's results table and the per-track tables of docs/, generated from the records in ``results/``; and the
numbers quoted in prose, checked against those records.

``docs/tables.yaml`` declares each generated block: the file it lives in, between the lines
``<!-- generated: NAME (make tables) -->`` and ``<!-- end generated: NAME -->``, and its Markdown table (a header
and rows of cells) written with the placeholders of ``raglab.experiments.numbers``: which
record, track, split, system and metric; a paired delta with its interval; a timing with its machine. It also
quotes the brief's reference numbers (GPU), each with the test set it used. ``docs/claims.yaml`` keeps the numbers
quoted in prose outside the blocks: per claim id, its file, the text as quoted, and the template that must
give that text. So no number is typed twice: a record that changes changes its tables with ``make tables``, and
fails the check wherever prose quotes it.

    python -m raglab.experiments.tables                 # make tables: rewrite every block from the records
    python -m raglab.experiments.tables --check         # exit 1, with a diff, when a block or a claim disagrees
    python -m raglab.experiments.tables --print readme  # one block (make baseline ARGS='--md --table readme')
"""

from __future__ import annotations

import difflib
import sys
from pathlib import Path
from typing import Any

import click
import yaml

from raglab.experiments.numbers import NumberError, Records

SPEC = "docs/tables.yaml"
CLAIMS = "docs/claims.yaml"


def read_yaml_file(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def records_of(repo: str | Path = ".", resamples: int = 2000) -> Records:
    """The records of ``repo``, with the brief's quotes of its ``docs/tables.yaml``."""
    return Records(repo, read_yaml_file(Path(repo) / SPEC).get("brief", {}), resamples)


def markers(name: str) -> tuple[str, str]:
    return f"<!-- generated: {name} (make tables) -->", f"<!-- end generated: {name} -->"


def template(block: dict[str, Any]) -> str:
    """A block's Markdown table with its placeholders, from ``table: {header: [cells], rows: [[cells], ...]}``; a
    cell's line breaks (YAML folds long cells) become spaces, so each row stays one line."""
    table = block["table"]
    width = len(table["header"])
    bad = [i for i, row in enumerate(table["rows"]) if len(row) != width]
    if bad:
        raise NumberError(f"rows {bad} do not have the header's {width} cells")
    lines = ["| " + " | ".join(table["header"]) + " |", "|" + "---|" * width]
    lines += ["| " + " | ".join(" ".join(str(cell).split()) for cell in row) + " |" for row in table["rows"]]
    return "\n".join(lines) + "\n"


def render_block(name: str, repo: str | Path = ".", records: Records | None = None) -> str:
    """Block ``name`` of ``docs/tables.yaml`` as the records give it (the text between its markers)."""
    blocks = read_yaml_file(Path(repo) / SPEC)["blocks"]
    if name not in blocks:
        raise NumberError(f"no block {name!r} in {SPEC} (known: {', '.join(blocks)})")
    try:
        return (records or records_of(repo)).render(template(blocks[name]))
    except NumberError as error:
        raise NumberError(f"{SPEC}, block {name}: {error}") from None


def between(text: str, name: str, path: str) -> tuple[int, int]:
    """Where block ``name``'s content starts and ends in ``text`` (the lines between its two markers)."""
    start, end = markers(name)
    first = text.find(start + "\n")
    last = text.find(end, first)
    if first < 0 or last < first or text.count(start) != 1:
        raise NumberError(f"{path}: block {name} needs one line {start!r} and, after it, {end!r}")
    return first + len(start) + 1, last


def blocks_by_file(repo: Path) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for name, block in read_yaml_file(repo / SPEC)["blocks"].items():
        grouped.setdefault(block["file"], []).append(name)
    return grouped


def generate(repo: str | Path = ".", write: bool = False, records: Records | None = None) -> list[str]:
    """Compare every block of every file with what the records give; rewrite the files that differ when
    ``write``. Returns a unified diff per differing file (empty: all agree)."""
    repo = Path(repo)
    records = records or records_of(repo)
    diffs = []
    for rel, names in blocks_by_file(repo).items():
        text = new = (repo / rel).read_text(encoding="utf-8")
        for name in names:
            first, last = between(new, name, rel)
            new = new[:first] + render_block(name, repo, records) + new[last:]
        if new != text:
            diffs.append("".join(difflib.unified_diff(text.splitlines(True), new.splitlines(True),
                                                      f"{rel} (committed)", f"{rel} (from the records)")))
            if write:
                (repo / rel).write_text(new, encoding="utf-8")
    return diffs


def check_claims(repo: str | Path = ".", records: Records | None = None) -> list[str]:
    """The claims of ``docs/claims.yaml`` that the records no longer give, or that their file no longer quotes."""
    repo = Path(repo)
    records = records or records_of(repo)
    problems = []
    for cid, claim in read_yaml_file(repo / CLAIMS).items():
        try:
            given = records.render(claim["value"])
        except NumberError as error:
            problems.append(f"claim {cid}: {error}")
            continue
        if given != claim["quote"]:
            problems.append(f"claim {cid}: the records give {given!r}; {claim['file']} quotes {claim['quote']!r}")
        text = (repo / claim["file"]).read_text(encoding="utf-8")
        if " ".join(claim["quote"].split()) not in " ".join(text.split()):
            problems.append(f"claim {cid}: {claim['quote']!r} is no longer in {claim['file']}")
    return problems


@click.command()
@click.option("--check", is_flag=True, help="Change nothing; exit 1 with a diff when a file or claim disagrees.")
@click.option("--print", "name", metavar="BLOCK", help="Print one block as the records give it, and nothing else.")
@click.option("--repo", default=".", show_default=True)
def main(check: bool, name: str | None, repo: str) -> None:
    """Write README's and docs/' generated tables from results/ (docs/tables.yaml), and check the claims of
    docs/claims.yaml."""
    try:
        if name:
            sys.stdout.write(render_block(name, repo))
            return
        records = records_of(repo)
        diffs = generate(repo, write=not check, records=records)
        problems = check_claims(repo, records)
    except NumberError as error:
        raise click.ClickException(str(error)) from None
    for diff in diffs:
        click.echo(diff)
    for problem in problems:
        click.echo(problem, err=True)
    if check and diffs:
        click.echo(f"{len(diffs)} file(s) differ from what the records give: make tables", err=True)
    if problems:
        click.echo(f"{len(problems)} claim(s) of {CLAIMS} disagree with the records: reword them", err=True)
    if (check and diffs) or problems:
        sys.exit(1)


if __name__ == "__main__":
    main()
