"""How a stage ends on bad input: one line that names the file, row and field (or the parameter) and
what was expected, exit status 1, no traceback. ``RAGLAB_TRACEBACK=1`` shows the traceback too.

Every stage script ends with ``run(main)`` instead of calling its click command directly.
"""

from __future__ import annotations

import os
import sys

import click

# Errors that describe something the user can fix (an input, a parameter, the environment); anything
# else is a bug and keeps its traceback. The package's own (DataError, ParamsError, ModelSourceError,
# ServerError, ...) derive from ValueError or RuntimeError.
USER_ERRORS = (FileNotFoundError, NotADirectoryError, PermissionError, ValueError, RuntimeError)


def run(command: click.Command) -> None:
    try:
        command.main(standalone_mode=False)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("interrupted", err=True)
        sys.exit(130)
    except USER_ERRORS as e:
        if os.environ.get("RAGLAB_TRACEBACK"):
            raise
        message = str(e).strip() or type(e).__name__
        click.echo(f"error: {message}", err=True)
        sys.exit(1)
