"""Imports point one way: the product never imports the studies or CI tools (but for the `emopipe`
console, which gathers every command), and inside the product each layer imports only those below it."""
import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
# The product's layers, bottom first: a module may import its own layer and those below it only.
LAYERS = [
    {"errors"},
    {"config", "io", "numerics", "machine", "registry", "stats", "cli"},
    {"runtime", "data"},
    {"modeling"},
    {"engine"},
    {"apps"},
]
COMPOSITION_ROOT = "emopipe.apps.console"  # the `emopipe` command: product, study and CI commands together


def imports(file: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {node.module} | ({f"{node.module}.{a.name}" for a in node.names} if node.module in ("emopipe", "emopipe_ci", "emopipe_studies") else set())
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {name for name in found if name.split(".")[0] in ("emopipe", "emopipe_ci", "emopipe_studies")}


def modules(package: str):
    for file in sorted((SRC / package).rglob("*.py")):
        yield ".".join(file.relative_to(SRC).with_suffix("").parts), file


def layer(module: str) -> int:
    head = module.split(".")[1]
    return next(i for i, names in enumerate(LAYERS) if head in names)


def test_the_product_imports_downwards_only():
    wrong = []
    for module, file in modules("emopipe"):
        if module == "emopipe.__init__":
            continue
        for target in imports(file):
            if not target.startswith("emopipe.") or target in ("emopipe.__init__",):
                if module != COMPOSITION_ROOT and target.split(".")[0] != "emopipe":
                    wrong.append(f"{module} imports {target}")
                continue
            if layer(target) > layer(module):
                wrong.append(f"{module} imports {target}")
    assert not wrong, wrong


def test_ci_tools_never_import_the_studies_and_studies_use_only_the_harness_of_ci():
    wrong = [f"{m} imports {t}" for m, f in modules("emopipe_ci") for t in imports(f) if t.startswith("emopipe_studies")]
    wrong += [f"{m} imports {t}" for m, f in modules("emopipe_studies") for t in imports(f)
              if t.startswith("emopipe_ci") and not t.startswith("emopipe_ci.harness")]
    assert not wrong, wrong


def test_stages_import_the_product_only():
    stages = Path(__file__).resolve().parents[1] / "stages"
    assert not [f"{s.name}: {t}" for s in stages.glob("*.py") for t in imports(s) if not t.startswith("emopipe.") and t != "emopipe"]
