"""dvc.yaml's code dependencies and params, generated so that they cannot go stale.

A stage depends on the package files its script imports (at the top, inside functions, and through
each other, parents' `__init__.py` included) and on nothing else of the package: editing a model re-runs
the stages that build models, never the data stages. A folder whose every file is in that set is
listed as the folder. A stage's params are the `PARAMS` its script declares (and the only params it
can read: `emopipe.config.load_params(..., only=PARAMS)`). Data dependencies are left as written.

    python -m emopipe_ci.deps            # rewrite dvc.yaml's code deps and params (= make deps)
    python -m emopipe_ci.deps --check    # exit 1 and show what differs when dvc.yaml is stale
"""
from __future__ import annotations

import ast
import difflib
import io
from pathlib import Path

import typer
from ruamel.yaml import YAML

from emopipe.cli import run
from emopipe.io import atomic_path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "emopipe"
CODE = ("src/", "stages/")  # a dep under these is code, and generated

app = typer.Typer(add_completion=False, help=__doc__)


def module_file(src: Path, dotted: str) -> Path | None:
    base = src.joinpath(*dotted.split("."))
    return next((f for f in (base.with_suffix(".py"), base / "__init__.py") if f.is_file()), None)


def imported_modules(file: Path) -> set[str]:
    """Every `emopipe...` module `file` imports, anywhere in it (a name imported from a package may be a module)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(file.read_text(), str(file))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return {n for n in names if n.split(".")[0] == PACKAGE}


def import_closure(script: Path, src: Path) -> set[Path]:
    """The package files `script` runs when imported: its imports, theirs, and every parent package's __init__.py."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        for name in imported_modules(todo.pop()):
            parts = name.split(".")
            for file in filter(None, (module_file(src, ".".join(parts[:i])) for i in range(1, len(parts) + 1))):
                if file not in seen:
                    seen.add(file)
                    todo.append(file)
    return seen


def compact(files: set[Path], src: Path) -> list[Path]:
    """`files`, with every folder of the package whose .py files are all among them listed as the folder."""
    whole = sorted((d for d in {f.parent for f in files} if set(d.rglob("*.py")) <= files), key=lambda d: len(d.parts))
    kept: list[Path] = []
    for folder in whole:
        if folder != src / PACKAGE and not any(folder.is_relative_to(k) for k in kept):
            kept.append(folder)
    return sorted(kept + [f for f in files if not any(f.is_relative_to(k) for k in kept)])


def script_of(stage: dict) -> Path:
    return Path(next(arg for arg in stage["cmd"].split() if arg.startswith("stages/")))


def declared_params(script: Path) -> list[str]:
    """The `PARAMS = [...]` list literal of a stage script."""
    for node in ast.parse(script.read_text()).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "PARAMS" for t in node.targets):
            return list(ast.literal_eval(node.value))
    raise ValueError(f"{script} declares no PARAMS = [...]: list the params the stage reads")


def code_deps(script: Path, repo: Path) -> list[str]:
    src = repo / "src"
    return [script.as_posix()] + [p.relative_to(repo).as_posix() for p in compact(import_closure(repo / script, src), src)]


def regenerate(repo: Path) -> tuple[str, str]:
    """(dvc.yaml as it is, as it should be)."""
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    text = (repo / "dvc.yaml").read_text()
    tree = yaml.load(text)
    for stage in tree["stages"].values():
        body = stage.get("do", stage)
        script = script_of(body)
        deps = body["deps"]  # edited in place: a data dep keeps its comment
        for i in reversed(range(len(deps))):
            if isinstance(deps[i], str) and deps[i].startswith(CODE):
                del deps[i]
        for i, dep in enumerate(code_deps(script, repo)):
            deps.insert(i, dep)
        params = declared_params(repo / script)
        if params:
            body["params"] = params
        else:
            body.pop("params", None)
    out = io.StringIO()
    yaml.dump(tree, out)
    return text, out.getvalue()


@app.command()
def main(
    check: bool = typer.Option(False, "--check", help="only compare: exit 1 with the difference when dvc.yaml is stale"),
    repo: Path = typer.Option(REPO, help="repository whose dvc.yaml to generate"),
) -> None:
    """Regenerate (or check) the code deps and params of every stage in dvc.yaml."""
    if not (repo / "dvc.yaml").is_file():
        raise typer.BadParameter(f"--repo {repo} has no dvc.yaml; give the repository's root")
    current, wanted = regenerate(repo)
    if current == wanted:
        typer.echo("dvc.yaml: code deps and params are up to date")
        return
    if check:
        diff = difflib.unified_diff(current.splitlines(), wanted.splitlines(), "dvc.yaml", "dvc.yaml (generated)", lineterm="")
        typer.echo("\n".join(diff), err=True)
        typer.echo("dvc.yaml is stale: run `make deps` (python -m emopipe_ci.deps) and commit it", err=True)
        raise typer.Exit(1)
    with atomic_path(repo / "dvc.yaml") as tmp:
        tmp.write_text(wanted)
    typer.echo("dvc.yaml: code deps and params regenerated")


if __name__ == "__main__":
    run(app)
