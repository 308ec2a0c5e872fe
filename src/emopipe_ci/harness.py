"""A sandbox copy of the repository with its params changed, for runs of the real pipeline.

The harness the studies, the CI gate and the end-to-end tests share: the sandbox, its params
changed by one rule, `dvc repro` in it, and one subprocess runner.

    python -m emopipe_ci.harness /tmp/run --params tests/tiny_params.yaml    # = emopipe sandbox

Param changes follow `emopipe.config.merge` (what `emopipe recipe` does): sections merge key by
key, `model_args` and empty mappings replace. On the command line they are KEY=VALUE pairs with
dotted keys, the value read as YAML (`train.epochs=5`, `model_args={dropout: 0.5}`).
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import typer
import yaml

from emopipe.apps import offline_plots
from emopipe.cli import run as run_app
from emopipe.config import merge
from emopipe.errors import UserError

REPO = Path(__file__).resolve().parents[2]
app = typer.Typer(add_completion=False, help=__doc__)

# For processes that share the cores (parallel `dvc queue` workers, pytest-xdist workers): an OpenMP
# thread that finishes its part of a parallel region sleeps at once instead of spinning for a core
# the other process needs. Portable numerics run every GEMM on two MKL threads whatever
# OMP_NUM_THREADS says, so one-thread workers still oversubscribe; passive waiting gives the same
# bits, about twice as fast when two training loops share two cores.
SHARED_CORES_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}


class CommandFailed(UserError):
    """A command of the harness (a stage under `dvc repro`, git, dvc) exited non-zero; the message holds its output."""


def tool_env(repo: Path | None = None) -> dict[str, str]:
    """Environment whose PATH finds this interpreter's `python` and `dvc` first; with `repo`, its
    `src/` comes first on PYTHONPATH, so a sandbox runs its own copy of the code, not the
    editable install's (which may change while the sandbox runs)."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    if repo is not None and (repo / "src").is_dir():
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(repo / "src"), env.get("PYTHONPATH")]))
    return env


def run(cwd: Path, *args: str, env: Mapping[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command in `cwd` with the code of `cwd`'s src/ (and `env` over the environment), output captured;
    with `check`, a failure raises CommandFailed with that output."""
    done = subprocess.run(args, cwd=cwd, env=tool_env(Path(cwd)) | dict(env or {}), capture_output=True, text=True)
    if check and done.returncode:
        raise CommandFailed(f"`{shlex.join(args)}` failed ({done.returncode}) in {cwd}:\n{done.stdout}\n{done.stderr}")
    return done


def repro(repo: Path, *targets: str, env: Mapping[str, str] | None = None) -> float:
    """`dvc repro [targets]` in `repo`; its wall seconds."""
    started = time.monotonic()
    run(repo, "dvc", "repro", *targets, env=env)
    return time.monotonic() - started


def read_params(repo: Path) -> dict:
    return yaml.safe_load((repo / "params.yaml").read_text())


def set_params(repo: Path, overrides: Mapping) -> dict:
    """Merge `overrides` into `repo`'s params.yaml (the rule of `emopipe.config.merge`); the params as written."""
    params = read_params(repo)
    merge(params, overrides)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return params


def parse_assignments(items: list[str] | None, option: str) -> list[tuple[str, str]]:
    """['train.epochs=5', ...] as (dotted key, value text) pairs; a malformed item is a one-line error naming `option`."""
    pairs = []
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{option} wants KEY=VALUE, got {item!r}")
        pairs.append((key, value))
    return pairs


def as_tree(pairs: list[tuple[str, str]]) -> dict:
    """(dotted key, YAML value) pairs as the nested params they set: [('train.epochs', '5')] -> {'train': {'epochs': 5}}."""
    tree: dict = {}
    for key, value in pairs:
        *parents, leaf = key.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return tree


def make_sandbox(dest: Path, overrides: Mapping | None = None, repo: Path = REPO) -> Path:
    """Copy the repo's tracked and unignored files (and the generated offline plot template) to `dest`,
    merge `overrides` into its params.yaml, commit."""
    listed = run(repo, "git", "ls-files", "--cached", "--others", "--exclude-standard", "-z").stdout.split("\0")
    listed.append(str(offline_plots.TEMPLATE))
    dest.mkdir(parents=True, exist_ok=True)
    for rel in filter(None, listed):
        src = repo / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    if overrides:
        set_params(dest, overrides)
    commit(dest, "sandbox", init=True)
    return dest


def commit(repo: Path, message: str, init: bool = False) -> None:
    """Commit everything in `repo` (a sandbox: a repository of its own, `init` makes it)."""
    who = ("-c", "user.name=sandbox", "-c", "user.email=sandbox@localhost")
    if init:
        run(repo, "git", "init", "-q", "-b", "main")
    run(repo, "git", *who, "add", "-A")
    run(repo, "git", *who, "commit", "-q", "-m", message)


def load_overrides(path: Path | None) -> dict:
    """A YAML file of param overrides (a recipe, the tiny config), or none."""
    if path is None:
        return {}
    if not path.is_file():
        raise typer.BadParameter(f"{path} does not exist; give a YAML file of params")
    return yaml.safe_load(path.read_text()) or {}


@app.command()
def main(
    dest: Path = typer.Argument(..., help="folder to create the sandbox in"),
    params: Path = typer.Option(None, help="YAML merged over params.yaml"),
    sets: list[str] = typer.Option(None, "--set", help="KEY=VALUE param override after --params (repeatable)"),
    do_repro: bool = typer.Option(True, "--repro/--no-repro", help="run `dvc repro` in the sandbox"),
) -> None:
    """Copy this repository to DEST with the params changed, and run the pipeline there."""
    overrides = load_overrides(params)
    merge(overrides, as_tree(parse_assignments(sets, "--set")))
    make_sandbox(dest, overrides)
    if do_repro:  # DVC's own output on the terminal
        raise typer.Exit(subprocess.run(["dvc", "repro"], cwd=dest, env=tool_env(dest)).returncode)


if __name__ == "__main__":
    run_app(app)
