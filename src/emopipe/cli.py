"""How every entry point ends: a user error is one line `error: ...` on stderr and exit status 2.

Stage scripts, the `emopipe` command and every `python -m emopipe...` tool run their Typer
app through `run`. Any other exception is a bug and keeps its traceback.
"""
from __future__ import annotations

import sys

import typer
from typer.exceptions import TyperException

from emopipe import numerics
from emopipe.errors import UserError


def run(app: typer.Typer) -> None:
    """Run a Typer app; user errors (UserError, typer's usage errors) print one line and exit 2."""
    numerics.relaunch_allowed = True
    try:
        code = app(standalone_mode=False)  # not standalone, click *returns* a `typer.Exit` code
        if isinstance(code, int) and code:
            raise SystemExit(code)
    except UserError as err:
        fail(str(err))
    except typer.Exit as done:
        raise SystemExit(done.exit_code) from None
    except typer.Abort:
        fail("aborted")
    except TyperException as err:  # typer's own click: a bad option or value, an unknown command
        if type(err).__name__ == "NoArgsIsHelpError":  # no arguments at all: the help, as with --help
            err.show()
            raise SystemExit(2) from None
        hint = " (see --help)" if getattr(err, "exit_code", 1) == 2 else ""
        fail(f"{err.format_message()}{hint}".replace("\n", " "))


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)
