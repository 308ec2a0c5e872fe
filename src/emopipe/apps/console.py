"""emopipe: predict emotions with a trained model, apply a recipe; and the study and CI tools.

Each command is also a module that runs on its own: python -m emopipe.apps.predict, python -m emopipe_studies.ablation, ...
"""
from __future__ import annotations

import typer

from emopipe.apps import offline_plots, predict, recipe
from emopipe.cli import run
from emopipe_ci import gate, harness
from emopipe_studies import ablation, adaptation, bench, measure, report, scale

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
PANELS = {
    "Use a model": {"predict": predict, "recipe": recipe},
    "Studies": {"ablation": ablation, "report": report, "measure": measure, "adaptation": adaptation, "bench": bench,
                "scale": scale},
    "CI and set-up": {"sandbox": harness, "offline-plots": offline_plots},
}
for panel, commands in PANELS.items():
    for name, module in commands.items():
        app.command(name, help=module.__doc__, rich_help_panel=panel)(module.main)
app.add_typer(gate.app, name="gate", help=gate.__doc__, rich_help_panel="CI and set-up")


def main() -> None:
    run(app)
