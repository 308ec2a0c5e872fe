"""A stage depends on the code it runs, and only that (dvc.yaml's code deps are generated from the import
graph by emopipe_ci.deps), and reads only the params it declares (PARAMS, the same list as in dvc.yaml)."""
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from emopipe.config import Undeclared, UndeclaredParamError, load_params
from emopipe_ci import deps
from emopipe_ci.harness import make_sandbox

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
DVC = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
STAGES = {name: stage.get("do", stage) for name, stage in DVC.items()}
DATA_STAGES = ("download", "faces", "split", "oversample", "pack")


def instances(name: str) -> list[str]:
    """DVC's names of a stage: download@main and download@shift for a foreach stage."""
    foreach = DVC[name].get("foreach")
    return [f"{name}@{key}" for key in (foreach if isinstance(foreach, list) else foreach or {})] or [name]


def closure(name: str) -> set[Path]:
    return deps.import_closure(REPO / deps.script_of(STAGES[name]), SRC)


def test_stages_run_the_code_of_their_own_workspace():
    """A queued experiment runs in a copy of the repo; with PYTHONPATH=src its stages import that copy's
    package (the one DVC hashed as their deps), not the editable install's, which may change meanwhile."""
    assert all(stage["cmd"].startswith("PYTHONPATH=src python stages/") for stage in STAGES.values())


def test_dvc_yaml_is_what_the_generator_writes():
    current, wanted = deps.regenerate(REPO)
    assert current == wanted, "dvc.yaml's code deps or params are stale: run `make deps`"


def test_the_closure_sees_imports_inside_functions_and_parent_packages():
    files = {f.relative_to(SRC).as_posix() for f in closure("train")}
    assert {"emopipe/engine/fit.py", "emopipe/numerics.py", "emopipe/data/__init__.py"} <= files
    assert "emopipe/modeling/vits.py" in files  # imported inside the vit builders only


@pytest.mark.parametrize("name", DATA_STAGES)
def test_data_stages_run_no_model_code(name):
    """Editing a model, a loss or the training loop must not re-run download, faces, split, oversample or pack."""
    code = [f.relative_to(SRC).as_posix() for f in closure(name)]
    assert not [f for f in code if f.startswith(("emopipe/modeling/", "emopipe/engine/"))]
    assert "emopipe/runtime.py" not in code


def test_compact_lists_a_folder_only_when_every_file_in_it_is_a_dependency(tmp_path):
    package = tmp_path / "emopipe"
    for rel in ("__init__.py", "a/__init__.py", "a/x.py", "b/__init__.py", "b/y.py", "b/z.py"):
        (package / rel).parent.mkdir(parents=True, exist_ok=True)
        (package / rel).write_text("")
    files = {package / r for r in ("__init__.py", "a/__init__.py", "a/x.py", "b/__init__.py", "b/y.py")}
    assert deps.compact(files, tmp_path) == sorted([package / "__init__.py", package / "a", package / "b/__init__.py", package / "b/y.py"])


# ---------------------------------------------------------------------------- the params a stage may read
def test_a_stage_reads_what_it_declares_and_nothing_else():
    p = load_params(REPO / "params.yaml", only=["seed", "adapt", "train.precision", "split.group_pattern"])
    assert p.seed == 0 and p.adapt.shots > 0 and p.train.precision == "fp32" and p.split.group_pattern is None
    assert isinstance(p.train.epochs, Undeclared) and isinstance(p.model, Undeclared)
    for read in (lambda: p.train.epochs + 1, lambda: p.model == "small", lambda: bool(p.data_seed), lambda: p.faces.enabled,
                 lambda: f"{p.split.train}", lambda: {**p.model_args}, lambda: int(p.data_seed)):
        with pytest.raises(UndeclaredParamError, match="without declaring it"):
            read()
    # copying a section is not reading it: a stage may pass on what it did not declare, untouched
    assert dataclasses.replace(p.train, epochs=3).epochs == 3


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_stage_declares_params_in_its_script(name):
    assert deps.declared_params(REPO / deps.script_of(STAGES[name])) == STAGES[name].get("params", [])


# ---------------------------------------------------------------------------- checked against DVC and Python
def test_an_edit_to_a_module_stales_exactly_the_stages_that_import_it(tmp_path):
    """Each module of the package edited in turn in a copy of the repo: `dvc status` lists as changed
    exactly the stages whose import closure holds that module (their code deps in dvc.lock)."""
    from dvc.repo import Repo

    copy = make_sandbox(tmp_path / "repo")  # the tracked and unignored files: no data, no outputs
    closures = {name: {f.relative_to(REPO).as_posix() for f in closure(name)} for name in STAGES}
    modules = sorted(f.relative_to(REPO).as_posix() for f in (SRC / "emopipe").rglob("*.py"))
    lock = yaml.safe_load((copy / "dvc.lock").read_text())["stages"]
    assert all(any(d["path"].startswith("src/") for d in lock[s]["deps"]) for n in STAGES for s in instances(n)), \
        "dvc.lock lacks code deps: run `dvc repro` after `make deps`"
    wrong = []
    with Repo(str(copy)) as repo:
        for module in modules:
            original = (copy / module).read_text()
            (copy / module).write_text(original + "\n# an edit\n")
            try:
                status = repo.status()
            finally:
                (copy / module).write_text(original)
            stale = {stage.rsplit(":", 1)[-1] for stage, changes in status.items() for change in changes if isinstance(change, dict)
                     for path in change.get("changed deps", {}) if module == path or module.startswith(path.rstrip("/") + "/")}
            expected = {s for n, files in closures.items() if module in files for s in instances(n)}
            if stale != expected:
                wrong.append(f"{module}: dvc status {sorted(stale)}, import closure {sorted(expected)}")
    assert not wrong, "\n".join(wrong)


LOADED = """
import json, runpy, sys
sys.argv = [sys.argv[1], "--help"]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit:
    pass
print(json.dumps(sorted(m.__file__ for m in list(sys.modules.values()) if getattr(m, "__file__", None)
                       and m.__name__.split(".")[0] == "emopipe")))
"""


@pytest.mark.parametrize("name", sorted(STAGES))
def test_the_static_closure_holds_every_module_a_stage_loads(name):
    """What Python really loads when a stage script starts is among its declared code deps (nothing is
    imported in a way the import graph cannot see)."""
    script = REPO / deps.script_of(STAGES[name])
    env = dict(os.environ, PYTHONPATH=str(SRC))
    done = subprocess.run([sys.executable, "-c", LOADED, str(script)], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    loaded = {Path(f).resolve() for f in json.loads(done.stdout.strip().splitlines()[-1])}
    assert loaded - {f.resolve() for f in closure(name)} == set()


RUN_WATCHING_TORCH = """
import runpy, sys
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
finally:
    print("torch imported:", "torch" in sys.modules, file=sys.stderr)
"""


def test_the_data_stages_run_without_torch(tmp_path):
    """download, faces (disabled), split and oversample on a tiny generated set: download, split and
    oversample never import torch (a model edit cannot reach them, and they start in a second)."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for section in ("data", "shift"):
        params[section]["synthetic_counts"] = dict.fromkeys(["happy", "sad"], 16)
        params[section]["synthetic_size"] = 32
    params["adapt"]["shots"] = 2
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    common = ["--params", str(tmp_path / "params.yaml")]
    steps = [("download", ["main", "--out", f"{tmp_path}/raw", "--no-progress"], False),
             ("download", ["shift", "--out", f"{tmp_path}/raw", "--no-progress"], False),
             ("faces", ["main", "--raw", f"{tmp_path}/raw", "--out", f"{tmp_path}/faces", "--sheet", f"{tmp_path}/sheets", "--no-progress"], None),
             ("faces", ["shift", "--raw", f"{tmp_path}/raw", "--out", f"{tmp_path}/faces", "--sheet", f"{tmp_path}/sheets", "--no-progress"], None),
             ("split", ["--faces", f"{tmp_path}/faces", "--raw", f"{tmp_path}/raw", "--out", f"{tmp_path}/split", "--metrics", f"{tmp_path}/data.json"], False),
             ("oversample", ["--train", f"{tmp_path}/split/train.csv", "--out", f"{tmp_path}/oversampled/train.csv"], False)]
    for script, args, torch_allowed in steps:
        done = subprocess.run([sys.executable, "-c", RUN_WATCHING_TORCH, f"stages/{script}.py", *args, *common], cwd=REPO,
                              env=dict(os.environ, PYTHONPATH=str(SRC)), capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        if torch_allowed is False:
            assert "torch imported: False" in done.stderr, f"{script} imported torch"
    assert len(pd.read_csv(tmp_path / "oversampled" / "train.csv")) >= len(pd.read_csv(tmp_path / "split" / "train.csv")) > 0
