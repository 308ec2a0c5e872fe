"""The lock: it satisfies pyproject.toml's ranges, pins every package with hashes, and is what is installed."""
import json
import re

import numpy as np
import pytest

from emopipe import versions
from emopipe_ci import lock

LOCKS = sorted(lock.FOLDER.glob("lock-py*.txt"))


def test_a_lock_for_every_supported_python():
    assert [p.name for p in LOCKS] == [f"lock-py{v}.txt" for v in lock.PYTHONS]


@pytest.mark.parametrize("path", LOCKS, ids=lambda p: p.name)
def test_each_lock_satisfies_pyproject_and_pins_with_hashes(path):
    python = re.search(r"py(\d+\.\d+)", path.name).group(1)
    locked = lock.pins(path)
    assert {"torch", "numpy", "pandas", "scikit-learn", "pillow", "dvc", "pytest", "transformers"} <= set(locked)
    assert lock.unsatisfied(lock.REPO / "pyproject.toml", locked, python) == []
    blocks = re.split(r"\n(?=[A-Za-z0-9])", path.read_text().split("\n\n", 1)[1])  # one block per pinned package
    assert all("--hash=sha256:" in block for block in blocks if "==" in block)


def test_the_no_deps_wheels_are_pinned_with_hashes():
    text = lock.NO_DEPS_FILE.read_text()
    assert lock.pins(lock.NO_DEPS_FILE) == lock.NO_DEPS
    assert all("--hash=sha256:" in line for line in text.splitlines() if "==" in line)


def test_this_environment_is_the_lock():
    """`make install` installs exactly the lock: nothing more, nothing less, no other version."""
    locked = lock.pins(lock.lock_file()) | lock.pins(lock.NO_DEPS_FILE)
    assert lock.drift(locked, lock.installed()) == []


def test_a_lock_outside_pyproject_ranges_is_named(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "x"\ndependencies = ["numpy<2", "missing>=1"]\n'
                         '[project.optional-dependencies]\ndev = ["pytest>=8"]\n')
    problems = lock.unsatisfied(pyproject, {"numpy": "2.4.6", "pytest": "9.2.0"}, "3.11")
    assert problems == ["numpy==2.4.6 is outside pyproject.toml's numpy<2", "missing is not in the lock"]


def test_drift_names_other_missing_and_extra_packages():
    problems = lock.drift({"numpy": "2.4.6", "pandas": "3.1.1"}, {"numpy": "2.4.5", "rich": "15.0.0"})
    assert problems == ["numpy 2.4.5 installed, the lock says 2.4.6", "pandas==3.1.1 is locked but not installed",
                        "rich 15.0.0 is installed but not locked"]


def test_train_metrics_record_the_locked_versions_that_shape_the_numbers():
    """The committed metrics/train.json was made under the lock: its versions are the lock's pins."""
    recorded = json.loads((lock.REPO / "metrics" / "train.json").read_text())["versions"]
    assert set(recorded) == set(versions.SHAPING_PACKAGES)
    assert recorded == {name: lock.pins(lock.lock_file("3.11"))[name] for name in recorded}
    assert versions.package_versions(("numpy", "no-such-package")) == {"numpy": np.__version__, "no-such-package": "missing"}
