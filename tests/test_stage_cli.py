"""Stage scripts: --help works, and bad params end in one line naming the param (exit 2)."""
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
STAGES = sorted(p.stem for p in (REPO / "stages").glob("*.py"))


def stage(name: str, *args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "stages" / f"{name}.py"), *args], cwd=cwd, capture_output=True, text=True)


@pytest.mark.parametrize("name", STAGES)
def test_help(name):
    done = stage(name, "--help")
    assert done.returncode == 0, done.stderr
    assert "Usage" in done.stdout


@pytest.mark.parametrize(
    "section, key, value, needle",
    [
        (None, "model", "vgg99", "model='vgg99' is not a registered model"),
        ("split", "train", 0.9, "they must sum to 1"),
        ("adapt", "shots", 0, "adapt.shots=0 is out of range"),
    ],
)
def test_bad_params_fail_in_one_line(tmp_path, section, key, value, needle):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    (params[section] if section else params)[key] = value
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    done = stage("train", "--params", str(tmp_path / "params.yaml"))
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and needle in done.stderr


def test_shots_larger_than_a_class_name_the_param(tmp_path):
    """k larger than a class of the shift domain: found by the split stage, which knows the counts."""
    import pandas as pd

    for domain, n in (("main", 30), ("shift", 4)):
        folder = tmp_path / "raw" / domain
        folder.mkdir(parents=True)
        labels = ["happy", "sad"] * (n // 2)
        pd.DataFrame({"image": [f"{domain}{i}.jpg" for i in range(n)], "label": labels,
                      "sha256": [f"{domain}{i}" for i in range(n)], "phash": [f"{(i * 0x9E3779B97F4A7C15) % 2**64:016x}" for i in range(n)]}).to_csv(folder / "manifest.csv", index=False)
        pd.DataFrame({"source": [], "reason": []}).to_csv(folder / "rejects.csv", index=False)
        pd.DataFrame({"image": [], "label": [], "reason": []}).to_csv(folder / "drops.csv", index=False)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["adapt"]["shots"] = 5
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    done = stage("split", "--params", str(tmp_path / "params.yaml"), "--raw", str(tmp_path / "raw"), "--faces", str(tmp_path / "raw"),
                 "--out", str(tmp_path / "split"), "--metrics", str(tmp_path / "data.json"))
    assert done.returncode == 2 and "adapt.shots=5 is too large for class" in done.stderr
    assert not (tmp_path / "split").exists()


def test_an_exit_code_raised_in_a_stage_reaches_the_shell(tmp_path):
    """`cli.run` runs apps in non-standalone mode, where click *returns* a typer.Exit code: it must still exit with it."""
    script = tmp_path / "stage.py"
    script.write_text("import typer\nfrom emopipe.cli import run\napp = typer.Typer()\n\n"
                      "@app.command()\ndef main() -> None:\n    raise typer.Exit(3)\n\nrun(app)\n")
    assert subprocess.run([sys.executable, str(script)], capture_output=True).returncode == 3


@pytest.mark.parametrize("args, needle", [(["--nope"], "No such option: --nope"), (["--params"], "Option '--params' requires an argument")])
def test_usage_errors_are_one_line_pointing_at_help(args, needle):
    """cli.run: a click usage error is one line `error: <message> (see --help)`, exit 2, no usage box."""
    done = stage("train", *args)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().count("\n") == 0 and done.stderr.startswith("error: ") and needle in done.stderr
    assert done.stderr.strip().endswith("(see --help)") and "Usage" not in done.stderr


def test_the_emopipe_command_lists_product_commands_then_studies_then_ci():
    from typer.testing import CliRunner

    from emopipe.apps import console

    done = CliRunner().invoke(console.app, ["--help"], env={"COLUMNS": "200"})
    assert done.exit_code == 0, done.output
    panels = [done.output.index(f"─ {panel} ") for panel in ("Use a model", "Studies", "CI and set-up")]
    assert panels == sorted(panels)
    where = {name: done.output.index(f"│ {name} ") for name in ("predict", "recipe", "ablation", "bench", "sandbox", "gate")}
    assert panels[0] < where["predict"] < where["recipe"] < panels[1] < where["ablation"] < where["bench"] < panels[2] < where["sandbox"]
    assert panels[2] < where["gate"]
