"""dvc.yaml cannot go stale: every stage declares each module of the package its script imports."""
import ast
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
STAGES = {name: stage.get("do", stage) for name, stage in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].items()}


def module_file(dotted: str) -> Path | None:
    base = SRC.joinpath(*dotted.split("."))
    return next((f for f in (base.with_suffix(".py"), base / "__init__.py") if f.exists()), None)


def import_closure(script: Path, seen: set[Path] | None = None) -> set[Path]:
    """The package's files that `script` imports, directly or through each other (parents' __init__ included)."""
    seen = set() if seen is None else seen
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        else:
            continue
        for name in (n for n in names if n.split(".")[0] == "emopipe"):
            parts = name.split(".")
            for file in filter(None, (module_file(".".join(parts[:i])) for i in range(1, len(parts) + 1))):
                if file not in seen:
                    seen.add(file)
                    import_closure(file, seen)
    return seen


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_declares_every_module_it_imports(name):
    stage = STAGES[name]
    script = REPO / stage["cmd"].split()[1]
    declared = {d if isinstance(d, str) else next(iter(d)) for d in stage["deps"]}
    needed = {str(f.relative_to(REPO)) for f in import_closure(script)} | {str(script.relative_to(REPO))}
    assert not needed - declared, f"dvc.yaml stage {name!r} misses deps: {sorted(needed - declared)}"


def test_the_closure_sees_indirect_imports():
    closure = {f.relative_to(SRC).as_posix() for f in import_closure(REPO / "stages/train.py")}
    assert {"emopipe/engine/fit.py", "emopipe/numerics.py", "emopipe/data/augment.py"} <= closure
