"""The metric gate: compare a run's metrics with a committed reference, fail on regressions.

    python -m emopipe.gate check --reference .ci/reference-metrics.json --metrics metrics
    python -m emopipe.gate snapshot --metrics metrics > .ci/reference-metrics.json
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

# Higher is better for all of these; a drop beyond the tolerance fails.
GATED = (
    "eval.accuracy",
    "eval.macro_f1",
    "shift.plain.macro_f1",
    "shift.tta.macro_f1",
    "adapt.after.macro_f1",
)

app = typer.Typer(add_completion=False, help=__doc__)


def read_metrics(folder: Path) -> dict[str, float]:
    """Flatten metrics/<name>.json into {'<name>.<key>...': number} for the gated keys."""
    found = {}
    for key in GATED:
        name, *path = key.split(".")
        file = folder / f"{name}.json"
        if not file.exists():
            continue
        value = json.loads(file.read_text())
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, (int, float)):
            found[key] = float(value)
    return found


def compare(reference: dict[str, float], current: dict[str, float], tolerance: float) -> tuple[bool, str]:
    """(passed, table). A gated metric missing from the current run counts as a failure."""
    rows, ok = [f"{'metric':<24} {'reference':>9} {'current':>9} {'diff':>8}  verdict"], True
    for key in GATED:
        if key not in reference:
            continue
        old, new = reference[key], current.get(key)
        if new is None:
            ok = False
            rows.append(f"{key:<24} {old:>9.4f} {'missing':>9} {'':>8}  FAIL")
            continue
        diff = new - old
        verdict = "FAIL" if diff < -tolerance else ("better" if diff > tolerance else "ok")
        ok &= verdict != "FAIL"
        rows.append(f"{key:<24} {old:>9.4f} {new:>9.4f} {diff:>+8.4f}  {verdict}")
    return ok, "\n".join(rows)


@app.command()
def check(
    reference: Path = typer.Option(..., help="committed reference metrics (JSON from `snapshot`)"),
    metrics: Path = typer.Option(Path("metrics"), help="folder of the run's metrics files"),
    tolerance: float = typer.Option(0.03, help="largest allowed drop of any gated metric"),
) -> None:
    """Exit 1 when a gated metric dropped by more than the tolerance."""
    ok, table = compare(json.loads(reference.read_text()), read_metrics(metrics), tolerance)
    typer.echo(table)
    typer.echo(f"metric gate: {'passed' if ok else 'FAILED'} (tolerance {tolerance})")
    raise typer.Exit(0 if ok else 1)


@app.command()
def snapshot(metrics: Path = typer.Option(Path("metrics"), help="folder of the run's metrics files")) -> None:
    """Print the gated metrics of a run as a reference JSON."""
    json.dump(read_metrics(metrics), sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    app()
