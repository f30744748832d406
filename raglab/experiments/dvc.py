"""DVC and git from Python: run ``dvc``, find an experiment's commit, read an experiment's files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click

from raglab.core.formats import atomic_dir


def dvc_executable() -> str:
    """The dvc installed with this Python (a venv's, even when it is not activated), else the one on PATH."""
    venv_dvc = Path(sys.executable).with_name("dvc")
    return str(venv_dvc) if venv_dvc.is_file() else "dvc"


def run_dvc(*args: str, cwd: str | os.PathLike | None = None, env: dict[str, str] | None = None,
            check: bool = True) -> str:
    """``dvc ARGS``' standard output; a failure raises with the end of what it printed."""
    cmd = [dvc_executable(), *args]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise click.ClickException(f"{' '.join(cmd)} failed:\n{(proc.stdout + proc.stderr).strip()[-3000:]}")
    return proc.stdout


IDENTITY_HINT = 'git config user.name "Your Name" && git config user.email you@example.com'


def require_git_identity() -> None:
    """Stop before ``dvc exp run`` when git has no identity: DVC commits each experiment, and without one it fails
    deep inside the run. An identity is ``user.name`` and ``user.email`` in git's config (any level), or both
    ``GIT_AUTHOR_*`` and ``GIT_COMMITTER_*`` in the environment, which DVC also reads."""
    for key in ("name", "email"):
        if all(os.environ.get(f"GIT_{role}_{key.upper()}") for role in ("AUTHOR", "COMMITTER")):
            continue
        configured = subprocess.run(["git", "config", f"user.{key}"], capture_output=True, text=True, check=False)
        if not configured.stdout.strip():
            raise click.ClickException(f"DVC experiments are git commits and git has no user.{key}: set your "
                                       f"identity for this checkout with {IDENTITY_HINT}")


def git(*args: str) -> str:
    return subprocess.run(["git", *args], check=True, capture_output=True, text=True).stdout


def experiment_ref(exp_name: str) -> str:
    """The git ref of experiment ``exp_name``: on top of HEAD if there is one, else the newest of that name
    (work may have been committed while a long experiment ran)."""
    head = git("rev-parse", "HEAD").strip()
    ref = f"refs/exps/{head[:2]}/{head[2:]}/{exp_name}"  # where DVC keeps an experiment's commit
    if git("for-each-ref", ref).strip():
        return ref
    refs = git("for-each-ref", "--sort=-committerdate", "--format=%(refname)", "refs/exps/").split()
    named = [r for r in refs if r.rsplit("/", 1)[-1] == exp_name]
    if not named:
        raise click.ClickException(f"no experiment '{exp_name}' (looked for {ref} and any refs/exps/*/{exp_name})")
    return named[0]


def experiment_files(rev: str, paths: dict[str, str], cache: Path) -> dict[str, Path]:
    """``paths`` (name -> path in the repository) of experiment or git revision ``rev`` that exist there, copied
    out of DVC's cache (outputs) or git into ``cache/<commit>`` (a re-run experiment of the same name is another
    commit); each copied whole or not at all, so an interrupted copy is started again."""
    from dvc.api import DVCFileSystem

    try:
        ref = experiment_ref(rev)
    except click.ClickException:
        ref = rev  # a branch, tag or commit
    commit = subprocess.run(["git", "rev-parse", "--verify", f"{ref}^{{commit}}"], capture_output=True, text=True,
                            check=False)
    if commit.returncode != 0:
        raise click.ClickException(f"no experiment or git revision {rev!r}")
    dest = cache / commit.stdout.strip()
    fs, found = DVCFileSystem(".", rev=ref), {}
    for key, rel in paths.items():
        if not fs.exists(rel):
            continue
        target = dest / rel
        if not target.exists():
            with atomic_dir(target) as partial:
                fs.get(rel, str(partial), recursive=fs.isdir(rel))
        found[key] = target
    return found
