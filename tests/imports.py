"""The package's import graph, read statically (``ast``): what each module imports, inside ``raglab``.

Used by the layout tests (layers, cycles, sizes) and the stage-deps test (every module a stage script reaches
is covered by one of that stage's DVC deps). Imports inside functions count: a stage runs them too.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "raglab"


def module_file(name: str) -> Path | None:
    """The file of a module or package of the repo (``raglab.x.y`` or ``stages.z``), None if there is none."""
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def module_name(path: Path) -> str:
    parts = path.resolve().relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The ``raglab`` modules ``path`` imports (``from raglab.a import b`` gives ``raglab.a.b`` when that is a
    module, else ``raglab.a``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" if module_file(f"{node.module}.{a.name}") else node.module
                     for a in node.names]
        else:
            continue
        found |= {n for n in names if n.split(".")[0] == PACKAGE and module_file(n)}
    return found


def closure(path: Path) -> set[Path]:
    """Every repo file that importing ``path`` runs: the modules it imports, theirs, and so on, and the
    ``__init__.py`` of every package on the way."""
    seen: set[Path] = set()
    todo = [path.resolve()]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for name in imports(current):
            parts = name.split(".")
            for i in range(1, len(parts) + 1):
                f = module_file(".".join(parts[:i]))
                if f is not None and f.resolve() not in seen:
                    todo.append(f.resolve())
    return seen


def package_modules() -> list[Path]:
    return sorted((ROOT / PACKAGE).rglob("*.py"))
