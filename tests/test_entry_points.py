"""Every entry point, however it is started, turns a user error into one line `error: ...` and exit status 2:
the stage scripts, `python -m` of every command module, and the `emopipe` console."""
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STAGES = sorted(p.stem for p in (REPO / "stages").glob("*.py"))
MODULES = ["emopipe.apps.predict", "emopipe.apps.recipe", "emopipe.apps.offline_plots", "emopipe_ci.harness", "emopipe_ci.deps",
           "emopipe_studies.ablation", "emopipe_studies.report", "emopipe_studies.measure", "emopipe_studies.adaptation",
           "emopipe_studies.bench", "emopipe_studies.scale"]
EMOPIPE = [sys.executable, "-c", "from emopipe.apps.console import main; main()"]  # the console script, as pip installs it

# (command, a user error it must report in one line, a word the line must hold)
MISTAKES = [
    *[([sys.executable, f"stages/{s}.py", "--no-such-option"], "No such option") for s in STAGES],
    *[([sys.executable, "-m", m, "--no-such-option"], "No such option") for m in MODULES],
    ([sys.executable, "-m", "emopipe_ci.gate", "check", "--no-such-option"], "No such option"),
    ([*EMOPIPE, "no-such-command"], "No such command"),
    ([*EMOPIPE, "gate", "measure", "--no-such-option"], "No such option"),
    ([sys.executable, "stages/train.py", "--params", "missing.yaml"], "missing.yaml not found"),
    ([sys.executable, "stages/download.py", "elsewhere"], "domain must be one of"),
    ([sys.executable, "-m", "emopipe.apps.recipe", "no-such-recipe"], "recipe 'no-such-recipe' not found"),
    ([sys.executable, "-m", "emopipe.apps.predict", "missing.jpg", "--model", "missing.pt"], "missing.pt not found"),
    ([sys.executable, "-m", "emopipe_ci.gate", "check", "--reference", "missing.json"], "missing.json does not exist"),
    ([sys.executable, "-m", "emopipe_ci.harness", "/tmp/never", "--params", "missing.yaml", "--no-repro"], "missing.yaml does not exist"),
    ([sys.executable, "-m", "emopipe_ci.deps", "--repo", "missing"], "missing"),
    ([sys.executable, "-m", "emopipe_studies.report", "--from-json", "missing.json"], "missing.json does not exist"),
    ([sys.executable, "-m", "emopipe_studies.measure", "real-photos", "--data", "missing"], "missing is not a folder"),
    ([sys.executable, "-m", "emopipe_studies.adaptation", "--study", "missing.yaml"], "missing.yaml does not exist"),
    ([sys.executable, "-m", "emopipe_studies.ablation", "--repo", "missing", "--dry-run"], "missing"),
    ([sys.executable, "-m", "emopipe_studies.bench", "--params", "missing.yaml", "--no-repro"], "missing.yaml not found"),
    ([sys.executable, "-m", "emopipe_studies.scale", "--channels", "2"], "--channels 2: choose 1 or 3"),
]


@pytest.mark.parametrize("command, needle", MISTAKES, ids=lambda v: " ".join(v[1:]) if isinstance(v, list) else None)
def test_a_user_error_is_one_line_and_exit_2(tmp_path, command, needle):
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], done.stderr
