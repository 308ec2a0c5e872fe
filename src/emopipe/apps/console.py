"""emopipe's tools as one command: `emopipe predict ...`, `emopipe report ...`, `emopipe gate check`, ...

Installed by pip as the `emopipe` console script; `python -m emopipe.tools.<tool>` runs the same code.
"""
from __future__ import annotations

import typer

from emopipe.cli import run
from emopipe.tools import (
    ablation,
    adaptation,
    bench,
    gate,
    measure,
    offline_plots,
    predict,
    recipe,
    report,
    sandbox,
)

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
COMMANDS = {"predict": predict, "recipe": recipe, "report": report, "ablation": ablation, "bench": bench,
            "sandbox": sandbox, "measure": measure, "adaptation": adaptation,
            "offline-plots": offline_plots}
for name, module in COMMANDS.items():
    app.command(name, help=module.__doc__)(module.main)
app.add_typer(gate.app, name="gate", help=gate.__doc__)


def main() -> None:
    run(app)
