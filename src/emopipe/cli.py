"""Shared plumbing for the Typer stage scripts: bad input ends in one line, not a traceback."""
from __future__ import annotations

import sys

import typer

from emopipe import numerics
from emopipe.errors import UserError


def run(app: typer.Typer) -> None:
    """Run a stage app; user errors print `error: ...` on stderr and exit with status 2."""
    numerics.relaunch_allowed = True
    try:
        code = app(standalone_mode=False)  # not standalone, click *returns* a `typer.Exit` code
        if isinstance(code, int) and code:
            raise SystemExit(code)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except typer.Exit as done:
        raise SystemExit(done.exit_code) from None
    except Exception as err:  # click's usage errors arrive here in non-standalone mode
        if hasattr(err, "show"):
            err.show()
            raise SystemExit(getattr(err, "exit_code", 2)) from None
        raise
