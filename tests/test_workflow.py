"""The GitHub workflow: valid by GitHub's schema, and running what `.ci/run` runs, so the two cannot drift."""
import re
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / ".github" / "workflows" / "ci.yml"


def make_targets(commands: str) -> list[str]:
    return [t for line in re.findall(r"^\s*(?:run:\s*)?make ([\w -]+?)\s*$", commands, re.MULTILINE) for t in line.split()]


def test_the_workflow_passes_githubs_schema():
    done = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_broken_workflow_fails_the_schema(tmp_path):
    broken = yaml.safe_load(WORKFLOW.read_text())
    broken["jobs"]["checks"]["timeout-minute"] = 5  # a misspelt key
    (tmp_path / "ci.yml").write_text(yaml.safe_dump(broken))
    done = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows",
                           str(tmp_path / "ci.yml")], capture_output=True, text=True)
    assert done.returncode != 0


def test_the_workflow_runs_the_targets_of_ci_run_in_order():
    steps = yaml.safe_load(WORKFLOW.read_text())["jobs"]["checks"]["steps"]
    workflow = make_targets("\n".join(step.get("run", "") for step in steps))
    assert workflow == make_targets((REPO / ".ci" / "run").read_text()) == ["install", "browser", "test", "test-e2e", "gate"]


def test_pull_requests_get_the_gate_table_and_the_metrics_diff():
    steps = {step.get("name"): step for step in yaml.safe_load(WORKFLOW.read_text())["jobs"]["checks"]["steps"]}
    summary = steps["Summary"]["run"]
    assert ".gate/report.md" in summary and 'dvc metrics diff --md "origin/${BASE}"' in summary and "GITHUB_STEP_SUMMARY" in summary
    assert all(steps[name]["if"] == "github.event_name == 'pull_request'" for name in ("End-to-end tests", "Metric gate"))
