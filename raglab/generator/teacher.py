"""The teacher model of distillation: an OpenAI-compatible endpoint, or a model this repo serves itself.

``distill_cot.teacher`` names either an ``endpoint`` (``base_url``, the ``model`` to ask, the name
of the environment variable with the API key) or a model that ``download@teacher`` materialised
in ``models/base/teacher``; the latter is served with the same vLLM lifecycle as serve_infer's
systems (``raglab.serving.vllm``). Either way the caller gets an ``Endpoint`` and a cache identity
that names what answers (the API's URL and model, or the served weights), never a port. A served
teacher starts only when a request is not in the response cache.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import click

from raglab.params.pipeline import Teacher
from raglab.params.serving import Serving
from raglab.serving.cache import export_replies, import_replies, response_cache
from raglab.serving.systems import ServedEndpoint, served_endpoint, served_identity
from raglab.serving.types import Endpoint


@contextlib.contextmanager
def teacher_endpoint(spec: Teacher, teacher_dir: str | os.PathLike, serving: Serving,
                     log_dir: str | os.PathLike) -> Iterator[tuple[Endpoint | ServedEndpoint, str]]:
    """``(endpoint, identity)`` of the teacher; a served teacher runs until the block ends."""
    if spec.endpoint:
        endpoint = Endpoint(spec.endpoint.base_url, spec.model, spec.endpoint.api_key_env)
        yield endpoint, endpoint.identity
        return
    with served_endpoint("teacher", teacher_dir, serving, spec.trust_remote_code, log_dir) as served:
        yield served


def teacher_identity(spec: Teacher, teacher_dir: str | os.PathLike, serving: Serving) -> str:
    """The teacher's cache identity: the API's URL and model, or the served weights."""
    if spec.endpoint:
        return Endpoint(spec.endpoint.base_url, spec.model).identity
    return served_identity("teacher", teacher_dir, serving)


@click.group()
def main() -> None:
    """Move the teacher's replies between response caches: a compressed JSON Lines file that any machine (or a DVC
    remote) can hold, so a long distillation goes on where it stopped instead of asking again."""


def _identity(params_file: str, teacher_dir: str) -> str:
    from raglab.params.loader import load_params

    params = load_params(params_file)
    return teacher_identity(params.distill_cot.teacher, teacher_dir, params.serving)


@main.command("export")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--params", "params_file", default="params.yaml", show_default=True)
@click.option("--teacher", "teacher_dir", default="models/base/teacher", show_default=True,
              type=click.Path(file_okay=False))
def export_command(file: str, params_file: str, teacher_dir: str) -> None:
    """Write the teacher's replies in the response cache to FILE (.jsonl.gz)."""
    identity = _identity(params_file, teacher_dir)
    n = export_replies(response_cache(), identity, file)
    click.echo(f"{file}: {n} replies of {identity}")


@main.command("import")
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
def import_command(file: str) -> None:
    """Add the replies of FILE (written by export) to the response cache."""
    try:
        counts = import_replies(response_cache(), file)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"{file}: {counts['added']} replies added, {counts['present']} already in the cache")


if __name__ == "__main__":
    main()
