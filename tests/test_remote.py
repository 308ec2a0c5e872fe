"""A DVC remote round trip on a tiny standalone project: push, lose everything local, pull it back.

The project is a fresh `git init` + `dvc init` with a tracked folder (`dvc add`) and one pipeline
stage, so it runs in seconds; the real pipeline shares the same DVC mechanics.
"""
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from emopipe_ci.harness import tool_env

FILES = {
    "raw/a.txt": b"happy\n",
    "raw/b.bin": bytes(range(256)) * 64,
    "raw/nested/c.csv": b"image,label\nx.png,sad\n",
    "raw/nested/empty.txt": b"",
}
STAGE = """\
stages:
  count:
    cmd: python -c "import pathlib; n = sum(1 for p in pathlib.Path('raw').rglob('*') if p.is_file()); pathlib.Path('count.txt').write_text(str(n))"
    deps: [raw]
    outs: [count.txt]
"""
EXPECTED = FILES | {"count.txt": b"4"}  # the workspace after `dvc add raw` and `dvc repro`
ENV = tool_env() | {
    "DVC_NO_ANALYTICS": "1",
    "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
}


def run(cwd: Path, *args: str) -> str:
    done = subprocess.run(args, cwd=cwd, env=ENV, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"`{' '.join(args)}` failed in {cwd}:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def snapshot(root: Path, *tops: str) -> dict[str, bytes]:
    """Every file at or under `tops` (relative paths → bytes)."""
    found = [p for top in tops for p in ([root / top] if (root / top).is_file() else sorted((root / top).rglob("*")))]
    return {str(p.relative_to(root)): p.read_bytes() for p in found if p.is_file()}


def listing(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


def assert_clean(root: Path) -> None:
    assert json.loads(run(root, "dvc", "status", "--json")) == {}
    assert json.loads(run(root, "dvc", "status", "--cloud", "--json")) == {}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> tuple[Path, Path]:
    """(project, remote folder): a committed DVC project whose data and stage output are pushed once.

    Shared by the tests below (set-up is most of the time); each leaves it as it found it.
    """
    tmp = tmp_path_factory.mktemp("remote")
    root, remote = tmp / "project", tmp / "remote"
    root.mkdir()
    run(root, "git", "init", "-q", "-b", "main")
    run(root, "dvc", "init", "-q")
    run(root, "dvc", "config", "core.analytics", "false")
    run(root, "dvc", "config", "core.check_update", "false")
    run(root, "dvc", "remote", "add", "-d", "local", str(remote))
    for rel, content in FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(content)
    run(root, "dvc", "add", "-q", "raw")
    (root / "dvc.yaml").write_text(STAGE)
    run(root, "dvc", "repro", "-q")
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-q", "-m", "data and stage")
    run(root, "dvc", "push")
    return root, remote


def test_second_push_uploads_nothing(project):
    root, remote = project
    stored = listing(remote)
    out = run(root, "dvc", "push")
    assert "Everything is up to date" in out, out
    assert listing(remote) == stored


def test_fresh_clone_pulls_the_data(project, tmp_path):
    """The collaborator's case: clone the Git repo, `dvc pull`, get the same bytes."""
    root, _ = project
    clone = tmp_path / "clone"
    run(tmp_path, "git", "clone", "-q", str(root), str(clone))
    assert not (clone / "raw").exists() and not (clone / ".dvc" / "cache").exists()
    run(clone, "dvc", "pull")
    assert snapshot(clone, "raw", "count.txt") == EXPECTED
    assert_clean(clone)
    assert os.listdir(clone / ".dvc" / "cache"), "pull should fill the clone's own cache"


def test_push_then_pull_after_losing_workspace_and_cache(project):
    root, remote = project
    assert snapshot(root, "raw", "count.txt") == EXPECTED
    assert listing(remote), "push wrote nothing to the remote"

    shutil.rmtree(root / "raw")
    (root / "count.txt").unlink()
    shutil.rmtree(root / ".dvc" / "cache")
    run(root, "dvc", "pull")

    assert snapshot(root, "raw", "count.txt") == EXPECTED
    assert_clean(root)
