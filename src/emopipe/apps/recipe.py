"""Recipes: the settings that work for a kind of data, written into params.yaml in one command.

    emopipe recipe real-photos --data ~/photos && dvc exp run -n real-photos
    emopipe recipe recipes/my-recipe.yaml          # a recipe file of your own

A recipe is a YAML file of params (any subset of params.yaml, nested as there) in `recipes/`.
Its values are merged into params.yaml in place by the rule of `emopipe.config.merge`: comments
and every other param stay as they are, and `git diff params.yaml` shows exactly what the recipe
changed. The result is checked (types, ranges, and every registered choice) before it replaces
params.yaml.
"""
from __future__ import annotations

from pathlib import Path

import typer
from ruamel.yaml import YAML

from emopipe.cli import run
from emopipe.config import Params, load_params, merge
from emopipe.errors import ParamError
from emopipe.io import atomic_path

app = typer.Typer(add_completion=False, help=__doc__)


def recipe_file(name: str, folder: Path = Path("recipes")) -> Path:
    """`name` as a path, or `recipes/<name>.yaml`."""
    for path in (Path(name), folder / f"{name}.yaml"):
        if path.is_file():
            return path
    known = ", ".join(sorted(p.stem for p in folder.glob("*.yaml"))) or "none"
    raise ParamError(f"recipe {name!r} not found (neither a file nor {folder}/{name}.yaml); recipes: {known}")


def check_choices(p: Params) -> None:
    """Every param that names a registered choice, looked up in its registry. The stages check the ones
    they use when they run; this checks them all at once, before a long run starts."""
    from emopipe.data.augment import POLICIES
    from emopipe.data.faces.detectors import DETECTORS
    from emopipe.data.oversample import METHODS as OVERSAMPLING
    from emopipe.data.sources import SOURCES
    from emopipe.engine.adapt import METHODS as ADAPTATION
    from emopipe.engine.evaluate import TTA
    from emopipe.engine.fit import check_training_choices

    for registry, value, param in [
        (SOURCES, p.data.source, "data.source"), (SOURCES, p.shift.source, "shift.source"), (DETECTORS, p.faces.detector, None),
        (OVERSAMPLING, p.oversample.method, None), (TTA, p.eval.tta, None), (ADAPTATION, p.adapt.method, None),
        (POLICIES, p.adapt.augment, "adapt.augment"),
    ]:
        registry.lookup(value, param)
    check_training_choices(p.model, p.train)


@app.command()
def main(
    name: str = typer.Argument(..., help="recipe name in recipes/ (e.g. real-photos) or a YAML file"),
    data: Path = typer.Option(None, help="photo folder for the main domain (sets data.source: folder)"),
    shift: Path = typer.Option(None, help="photo folder for the shifted domain (sets shift.source: folder)"),
    params: Path = typer.Option(Path("params.yaml"), help="params file to update"),
) -> None:
    yaml = YAML()
    yaml.preserve_quotes = True
    recipe = YAML(typ="safe").load(recipe_file(name).read_text()) or {}
    for section, folder in (("data", data), ("shift", shift)):
        if folder is not None:
            merge(recipe, {section: {"source": "folder", "folder": str(folder.expanduser().resolve())}})
    tree = yaml.load(params.read_text())
    merge(tree, recipe)
    with atomic_path(params) as tmp:
        with tmp.open("w") as out:
            yaml.dump(tree, out)
        check_choices(load_params(tmp))  # an invalid result never replaces params.yaml
    typer.echo(f"{params}: applied recipe {name!r}; run `dvc exp run` (or `dvc repro`); `git diff {params}` shows the changes")


if __name__ == "__main__":
    run(app)
