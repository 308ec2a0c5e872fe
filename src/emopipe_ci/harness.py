"""A throw-away copy of the repository with overridden params, for smoke runs of the real pipeline.

Used by the end-to-end test and by CI's metric gate:

    python -m emopipe.tools.sandbox /tmp/run --params tests/tiny_params.yaml
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import typer
import yaml

from emopipe.tools import offline_plots

REPO = Path(__file__).resolve().parents[3]
app = typer.Typer(add_completion=False, help=__doc__)


def deep_merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        both_dicts = isinstance(value, dict) and isinstance(base.get(key), dict)
        merged[key] = deep_merge(base[key], value) if both_dicts else value
    return merged


# For processes that share the cores (parallel `dvc queue` workers, pytest-xdist workers): an OpenMP
# thread that finishes its part of a parallel region sleeps at once instead of spinning for a core
# the other process needs. Portable numerics run every GEMM on two MKL threads whatever
# OMP_NUM_THREADS says, so one-thread workers still oversubscribe. Two tiny-config training loops
# side by side on 2 cores: 11.9 and 13.3 s spinning, 6.3 and 6.5 s with it (alone: 4.4 s either
# way); the same bits.
SHARED_CORES_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}


def tool_env(repo: Path | None = None) -> dict[str, str]:
    """Environment whose PATH finds this interpreter's `python` and `dvc` first; with `repo`, its
    `src/` comes first on PYTHONPATH, so a sandbox runs its own copy of the code, not the
    editable install's (which may change while the sandbox runs)."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    if repo is not None and (repo / "src").is_dir():
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(repo / "src"), env.get("PYTHONPATH")]))
    return env


def sh(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run a command in `cwd` (with the code of `cwd`'s src/, and `env` over the environment); raise with
    its output when it fails."""
    done = subprocess.run(args, cwd=cwd, env=tool_env(Path(cwd)) | (env or {}), capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"`{' '.join(args)}` failed ({done.returncode}) in {cwd}:\n{done.stdout}\n{done.stderr}")
    return done


def make_sandbox(dest: Path, overrides: Path | None = None, repo: Path = REPO) -> Path:
    """Copy the repo's tracked and unignored files (and the generated offline plot template) to `dest`,
    merge `overrides` into params.yaml, commit."""
    listed = sh(repo, "git", "ls-files", "--cached", "--others", "--exclude-standard", "-z").stdout.split("\0")
    listed.append(str(offline_plots.TEMPLATE))
    dest.mkdir(parents=True, exist_ok=True)
    for rel in filter(None, listed):
        src = repo / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    if overrides is not None:
        params = yaml.safe_load((dest / "params.yaml").read_text())
        merged = deep_merge(params, yaml.safe_load(Path(overrides).read_text()) or {})
        (dest / "params.yaml").write_text(yaml.safe_dump(merged, sort_keys=False))
    sh(dest, "git", "init", "-q", "-b", "main")
    sh(dest, "git", "-c", "user.name=sandbox", "-c", "user.email=sandbox@localhost", "add", "-A")
    sh(dest, "git", "-c", "user.name=sandbox", "-c", "user.email=sandbox@localhost", "commit", "-q", "-m", "sandbox")
    return dest


@app.command()
def main(
    dest: Path = typer.Argument(..., help="folder to create the sandbox in"),
    params: Path = typer.Option(None, help="YAML merged over params.yaml"),
    repro: bool = typer.Option(True, help="run `dvc repro` in the sandbox"),
) -> None:
    make_sandbox(dest, params)
    if repro:
        subprocess.run(["dvc", "repro"], cwd=dest, env=tool_env(dest), check=True)


if __name__ == "__main__":
    app()
