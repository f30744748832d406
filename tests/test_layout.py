"""The shape of the code: stages whose DVC deps cover everything they import, a package in layers without
cycles, and modules small enough to read."""

from __future__ import annotations

import ast
import re
from collections import Counter
from pathlib import Path

import pytest
from imports import ROOT, closure, imports, module_file, module_name, package_modules

# The package's rooms, lowest first: a module may import its own room and the rooms of lower layers only.
LAYERS = {
    "core": 0,
    "params": 1,
    "data": 2, "models": 2,
    "serving": 3,
    "retriever": 4, "generator": 4,
    "evaluation": 5, "rag": 5,
    "experiments": 6,
    "assistant": 7,
}
MAX_LINES = 300


def dvc_stages() -> dict[str, tuple[str, list[str]]]:
    """Every stage of dvc.yaml (foreach parts resolved): ``name -> (cmd, deps as written)``."""
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        return {stage.addressing: (stage.cmd, [str(d.def_path) for d in stage.deps]) for stage in repo.index.stages}


def stage_script(cmd: str) -> Path:
    m = re.match(r"python -m (stages\.\w+)", cmd)
    assert m, f"a stage runs a script of stages/ with python -m: {cmd!r}"
    return module_file(m.group(1))


def uncovered(script: Path, deps: list[str]) -> list[str]:
    """The repo files ``script`` runs (its import closure, package ``__init__`` files aside: they hold only a
    docstring, and the top one the version) that no dep covers (the file itself, or a folder above it)."""
    missing = []
    for f in sorted(closure(script)):
        rel = f.relative_to(ROOT).as_posix()
        if f.name == "__init__.py":
            continue
        if not any(rel == d or rel.startswith(d.rstrip("/") + "/") for d in deps):
            missing.append(rel)
    return missing


@pytest.fixture(scope="module")
def stages():
    return dvc_stages()


def test_every_stage_lists_the_code_it_runs(stages):
    assert len(stages) >= 16
    problems = {name: uncovered(stage_script(cmd), deps) for name, (cmd, deps) in stages.items()}
    assert {name: missing for name, missing in problems.items() if missing} == {}


def test_a_removed_dep_is_found(stages):
    cmd, deps = stages["build_sft"]
    script = stage_script(cmd)
    assert uncovered(script, deps) == []
    assert uncovered(script, [d for d in deps if d != "raglab/rag/kb.py"]) == ["raglab/rag/kb.py"]
    assert "raglab/core/formats.py" in uncovered(script, [d for d in deps if d != "raglab/core"])


def test_no_stage_repeats_a_dep(stages):
    repeated = {name: [d for d, n in Counter(deps).items() if n > 1] for name, (_, deps) in stages.items()}
    assert {name: r for name, r in repeated.items() if r} == {}


def room(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and module_file(name).name == "__init__.py") else None


def test_every_module_lives_in_a_room():
    loose = [module_name(f) for f in package_modules() if module_name(f) != "raglab" and room(module_name(f)) is None]
    assert loose == []
    assert {room(module_name(f)) for f in package_modules()} - {None} == set(LAYERS)


def test_no_module_imports_upwards():
    upward = []
    for f in package_modules():
        source = room(module_name(f))
        for target in imports(f):
            other = room(target) if target != "raglab" else None
            if other and other != source and LAYERS[other] >= LAYERS[source]:
                upward.append(f"{module_name(f)} -> {target}")
    assert upward == []


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles, state = [], {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return cycles


def test_no_import_cycles():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]  # the check sees one
    graph = {module_name(f): {t for t in imports(f) if module_file(t) and module_file(t).name != "__init__.py"}
             for f in package_modules()}
    assert find_cycles(graph) == []


def test_modules_stay_small():
    sizes = {f.relative_to(ROOT).as_posix(): len(f.read_text(encoding="utf-8").splitlines())
             for f in [*package_modules(), *sorted((ROOT / "stages").glob("*.py"))]}
    assert {f: n for f, n in sizes.items() if n > MAX_LINES} == {}


def test_package_init_files_hold_only_a_docstring():
    for f in package_modules():
        if f.name == "__init__.py" and f.parent != ROOT / "raglab":
            body = ast.parse(f.read_text(encoding="utf-8")).body
            assert len(body) == 1 and isinstance(body[0], ast.Expr), f"{f} holds more than a docstring"


def test_every_imported_name_exists():
    """``from raglab.x import name`` anywhere in the repo (inside functions too) names something that exists."""
    import importlib

    missing = []
    files = [*package_modules(), *(ROOT / d / f for d in ("stages", "tests", "benchmarks")
                                   for f in sorted(p.name for p in (ROOT / d).glob("*.py")))]
    for f in files:
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "raglab":
                module = importlib.import_module(node.module)
                missing += [f"{f.relative_to(ROOT)}: {node.module}.{a.name}" for a in node.names
                            if not hasattr(module, a.name) and module_file(f"{node.module}.{a.name}") is None]
    assert missing == []
