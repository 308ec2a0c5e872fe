"""The lock: the exact version, with its hashes, of every package the README's two commands install.

    python -m emopipe_ci.lock compile                    # = make lock: re-lock everything, for every Python in PYTHONS
    python -m emopipe_ci.lock compile --upgrade numpy    # = make lock-upgrade PACKAGE=numpy: move one package only
    python -m emopipe_ci.lock check                      # the lock against pyproject.toml, this environment against the lock

`requirements/lock-py3.X.txt` is pip-tools' `pip-compile` of pyproject.toml with the dev and hub extras,
one file per supported Python (a resolution holds for one interpreter: markers, wheels).
`requirements/no-deps.txt` pins, with hashes, the wheels installed without their dependencies
(`NO_DEPS`: their own pins would replace torch or pull in TensorFlow). `make install` installs the
lock, then those, then the project itself without dependencies.
"""
from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from importlib import metadata
from pathlib import Path

import typer
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from emopipe.cli import run

app = typer.Typer(add_completion=False, help=__doc__)
REPO = Path(__file__).resolve().parents[2]
FOLDER = REPO / "requirements"
NO_DEPS_FILE = FOLDER / "no-deps.txt"
EXTRAS = ("dev", "hub")
NO_DEPS = {"facenet-pytorch": "2.6.0", "fer": "25.10.3"}
PYTHONS = ("3.11", "3.12", "3.13")
PIP_TOOLS = "pip-tools==7.7.0"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)", re.MULTILINE)


def lock_file(python: str = f"{sys.version_info[0]}.{sys.version_info[1]}") -> Path:
    return FOLDER / f"lock-py{python}.txt"


def pins(path: Path) -> dict[str, str]:
    """{canonical name: version} of a requirements file's `name==version` lines."""
    return {canonicalize_name(name): version for name, version in _PIN.findall(path.read_text())}


def requirements(pyproject: Path) -> list[Requirement]:
    """The project's dependencies and those of the extras the lock holds."""
    project = tomllib.loads(pyproject.read_text())["project"]
    extras = project.get("optional-dependencies", {})
    return [Requirement(r) for r in project["dependencies"] + [r for e in EXTRAS for r in extras.get(e, [])]]


def unsatisfied(pyproject: Path, locked: dict[str, str], python: str) -> list[str]:
    """What in the lock breaks pyproject.toml's ranges (a package missing, or pinned outside its range)."""
    problems = []
    for req in requirements(pyproject):
        if req.marker and not req.marker.evaluate({"python_version": python, "python_full_version": f"{python}.0"}):
            continue
        version = locked.get(canonicalize_name(req.name))
        if version is None:
            problems.append(f"{req.name} is not in the lock")
        elif not req.specifier.contains(version, prereleases=True):
            problems.append(f"{req.name}=={version} is outside pyproject.toml's {req.name}{req.specifier}")
    return problems


def installed() -> dict[str, str]:
    """{canonical name: version} of this environment's distributions, pip and the project itself left out."""
    found = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    return {name: v for name, v in found.items() if name not in ("pip", "emopipe")}


def drift(locked: dict[str, str], have: dict[str, str]) -> list[str]:
    """How the environment differs from the lock: other versions, missing and extra packages."""
    problems = [f"{n} {have[n]} installed, the lock says {v}" for n, v in sorted(locked.items()) if n in have and have[n] != v]
    problems += [f"{n}=={v} is locked but not installed" for n, v in sorted(locked.items()) if n not in have]
    problems += [f"{n} {v} is installed but not locked" for n, v in sorted(have.items()) if n not in locked]
    return problems


def _tools_python(python: str, folder: Path) -> Path:
    """A throwaway venv of `python` with pip-tools: pip-compile resolves for the interpreter it runs on."""
    exe = subprocess.run([f"python{python}", "-c", "import sys; print(sys.executable)"], capture_output=True, text=True)
    if exe.returncode:
        raise typer.BadParameter(f"python{python} is not on PATH: install it, or leave it out of --python")
    subprocess.run([exe.stdout.strip(), "-m", "venv", str(folder)], check=True)
    subprocess.run([str(folder / "bin" / "pip"), "install", "-q", PIP_TOOLS], check=True)
    return folder / "bin" / "python"


def compile_lock(python: str, upgrade: list[str]) -> None:
    out = lock_file(python)
    with tempfile.TemporaryDirectory() as tmp:
        tool = _tools_python(python, Path(tmp) / "venv")
        args = [str(tool), "-m", "piptools", "compile", "-q", "--generate-hashes", "--allow-unsafe", "--strip-extras",
                "--no-emit-index-url", "--no-emit-find-links", "--no-emit-trusted-host", "--resolver=backtracking",
                *[f"--extra={e}" for e in EXTRAS], "--output-file", str(out.relative_to(REPO)), "pyproject.toml"]
        args += [flag for name in upgrade for flag in ("--upgrade-package", name)] if upgrade else ["--upgrade"]
        subprocess.run(args, cwd=REPO, check=True, env=os.environ | {"CUSTOM_COMPILE_COMMAND": "make lock"})


def compile_no_deps() -> None:
    """Hash each NO_DEPS wheel as the registry serves it (downloaded once, without dependencies)."""
    lines = ["# The wheels `make install` installs without their dependencies (see src/emopipe_ci/lock.py). make lock"]
    with tempfile.TemporaryDirectory() as tmp:
        for name, version in NO_DEPS.items():
            folder = Path(tmp) / name
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", str(folder),
                            f"{name}=={version}"], check=True)
            digests = sorted(hashlib.sha256(f.read_bytes()).hexdigest() for f in folder.iterdir())
            lines.append(f"{name}=={version} " + " ".join(f"--hash=sha256:{d}" for d in digests))
    NO_DEPS_FILE.write_text("\n".join(lines) + "\n")


@app.command("compile")
def compile_(
    python: list[str] = typer.Option(list(PYTHONS), help="Python versions to lock for (each must be on PATH as pythonX.Y)"),
    upgrade: list[str] = typer.Option([], help="move only these packages (pip-compile --upgrade-package); default: all"),
) -> None:
    """Re-lock: every package to the newest release pyproject.toml allows, or only --upgrade ones."""
    FOLDER.mkdir(exist_ok=True)
    for version in python:
        compile_lock(version, upgrade)
        typer.echo(f"wrote {lock_file(version).relative_to(REPO)}")
    if not upgrade or set(upgrade) & set(NO_DEPS):
        compile_no_deps()
        typer.echo(f"wrote {NO_DEPS_FILE.relative_to(REPO)}")


@app.command()
def check() -> None:
    """Exit 1 when the lock breaks pyproject.toml's ranges, or this environment differs from the lock."""
    python = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if not lock_file(python).is_file():
        raise typer.BadParameter(f"no lock for Python {python} ({lock_file(python).relative_to(REPO)}): "
                                 f"use one of {', '.join(PYTHONS)}, or add it to PYTHONS and run make lock")
    locked = pins(lock_file(python))
    problems = unsatisfied(REPO / "pyproject.toml", locked, python)
    problems += drift(locked | pins(NO_DEPS_FILE), installed())
    for line in problems:
        typer.echo(line)
    if problems:
        raise typer.Exit(1)
    typer.echo(f"{lock_file(python).relative_to(REPO)}: satisfies pyproject.toml, and this environment matches it")


if __name__ == "__main__":
    run(app)
