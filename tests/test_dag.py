"""dvc.yaml cannot go stale: every stage declares each module of the package its script imports
and each param of params.yaml its script reads."""
import ast
import dataclasses
import typing
from pathlib import Path

import pytest
import yaml

from emopipe.config import Params

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
DVC = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
STAGES = {name: stage.get("do", stage) for name, stage in DVC.items()}


def stage_script(stage: dict) -> str:
    return next(arg for arg in stage["cmd"].split() if arg.startswith("stages/"))


def test_stages_run_the_code_of_their_own_workspace():
    """A queued experiment runs in a copy of the repo; with PYTHONPATH=src its stages import that copy's
    package (the one DVC hashed as their deps), not the editable install's, which may change meanwhile."""
    assert all(stage["cmd"].startswith("PYTHONPATH=src python stages/") for stage in STAGES.values())


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
    script = REPO / stage_script(stage)
    declared = {d if isinstance(d, str) else next(iter(d)) for d in stage["deps"]}
    needed = {str(f.relative_to(REPO)) for f in import_closure(script)} | {str(script.relative_to(REPO))}
    assert not needed - declared, f"dvc.yaml stage {name!r} misses deps: {sorted(needed - declared)}"


def test_the_closure_sees_indirect_imports():
    closure = {f.relative_to(SRC).as_posix() for f in import_closure(REPO / "stages/train.py")}
    assert {"emopipe/engine/fit.py", "emopipe/numerics.py", "emopipe/data/augment.py"} <= closure


def declared_params(stage: dict) -> set[str]:
    """The params.yaml keys a dvc.yaml stage declares (string entries: the default params file).

    A foreach stage declares those of all its instances together, `${key}` and `${item}` expanded:
    the download script picks its section (data or shift) from its command-line argument.
    """
    foreach = stage.get("foreach")
    instances = foreach.items() if isinstance(foreach, dict) else enumerate(foreach or [None])
    entries = [e for e in stage.get("do", stage).get("params", []) if isinstance(e, str)]
    return {e.replace("${key}", str(key)).replace("${item}", str(item)) for key, item in instances for e in entries}


def param_key(path: list[str]) -> str:
    """The params.yaml key that the attribute path `path` on a `Params` reads.

    It follows sections (dataclasses) and ends at the first field that is not one, so
    `train.epochs.real` reads `train.epochs` and `train` alone the whole section; [] is the whole object.
    """
    key, cls = [], Params
    for attr in path:
        if not dataclasses.is_dataclass(cls):
            break
        key.append(attr)
        cls = typing.get_type_hints(cls).get(attr)
    return ".".join(key)


def assigned(tree: ast.AST, name: str) -> list[ast.expr]:
    """The values assigned to `name` anywhere in `tree`."""
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == name for t in n.targets)]


def strings(expr: ast.expr, tree: ast.AST) -> set[str]:
    """The strings `expr` can be: a constant, a name bound to one, or an item of a dict literal (`SECTIONS[domain]`)."""
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
        return {expr.value}
    if isinstance(expr, ast.Name):
        options = assigned(tree, expr.id)
    elif isinstance(expr, ast.Subscript) and isinstance(expr.value, ast.Name):
        options = [v for d in assigned(tree, expr.value.id) if isinstance(d, ast.Dict) for v in d.values]
    else:
        options = []
    if not options:
        raise ValueError(f"line {expr.lineno}: getattr on the params with {ast.unparse(expr)!r}, which is no known string")
    return set().union(*(strings(o, tree) for o in options))


def climb(name: ast.Name, paths: list[list[str]], tree: ast.AST, parents: dict) -> tuple[ast.expr, list[list[str]]]:
    """From a use of a params name, up through `getattr(name, ...)` and `.attr`: the outermost expression and its paths."""
    node, call = name, parents.get(name)
    if isinstance(call, ast.Call) and ast.unparse(call.func) == "getattr" and call.args[0] is name:
        node, paths = call, [path + [attr] for path in paths for attr in strings(call.args[1], tree)]
    while isinstance(parent := parents.get(node), ast.Attribute):
        node, paths = parent, [path + [parent.attr] for path in paths]
    return node, paths


def loads_params(expr: ast.expr) -> bool:
    """Whether `expr` is a call of `load_params` (bare or `module.load_params`)."""
    return isinstance(expr, ast.Call) and ast.unparse(expr.func).split(".")[-1] == "load_params"


def alias_bound(expr: ast.expr, parents: dict) -> str | None:
    """The name that `expr` is assigned to on its own (`a = expr`), if it is."""
    assign = parents.get(expr)
    if isinstance(assign, ast.Assign) and assign.value is expr and len(assign.targets) == 1:
        return getattr(assign.targets[0], "id", None)
    return None


def params_read(source: str) -> set[str]:
    """The params.yaml keys a stage script reads, found statically.

    Names bound to `load_params(...)` hold the params; a name bound to an expression on them
    (`a = p.adapt`) is an alias of that path. Names are not scoped: a stage script is one small module.
    Raises ValueError where the reads cannot be seen: the whole params object passed on, or a getattr
    with a name that is not a known string.
    """
    tree = ast.parse(source)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    roots = {t.id: [[]] for n in ast.walk(tree) if isinstance(n, ast.Assign) and loads_params(n.value)
             for t in n.targets if isinstance(t, ast.Name)}
    uses = sorted((n for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)),
                  key=lambda n: (n.lineno, n.col_offset))
    reads = set()
    for name in uses:
        if name.id not in roots:  # an alias is a root from its assignment on
            continue
        top, paths = climb(name, roots[name.id], tree, parents)
        if alias := alias_bound(top, parents):
            roots[alias] = paths
            continue
        keys = {param_key(path) for path in paths}
        if "" in keys:
            raise ValueError(f"line {name.lineno} passes the whole params object on: pass explicit sections instead")
        reads |= keys
    return reads


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_declares_every_param_it_reads(name):
    script = REPO / stage_script(STAGES[name])
    try:
        reads = params_read(script.read_text())
    except ValueError as err:
        pytest.fail(f"dvc.yaml stage {name!r}: cannot tell which params {script.name} reads: {err}")
    declared = declared_params(DVC[name])
    missing = sorted(k for k in reads if not any(k == d or k.startswith(d + ".") for d in declared))
    assert not missing, f"dvc.yaml stage {name!r} misses params: {missing}"


@pytest.mark.parametrize("source, reads", [
    pytest.param("p = load_params()\nf(p.eval.batch_size)", {"eval.batch_size"}, id="key"),
    pytest.param("p = config.load_params(x)\nfit(p.train)\nb = p.train.transfer\nf(b.freeze_epochs, p.seed)",
                 {"train", "train.transfer.freeze_epochs", "seed"}, id="section"),
    pytest.param("p = load_params()\na = p.adapt\nbs = a.batch_size\nf(a.lr, bs, p.model_args.get('x'))",
                 {"adapt.lr", "adapt.batch_size", "model_args"}, id="alias"),
    pytest.param("S = {'main': 'data'}\np = load_params()\ns = S[d]\nf(getattr(p, s).source, getattr(p, 'shift'))",
                 {"data.source", "shift"}, id="getattr"),
])
def test_the_analysis_sees_indirect_reads(source, reads):
    assert params_read(source) == reads


@pytest.mark.parametrize("source", ["p = load_params()\nfit(p)", "p = load_params()\nf(getattr(p, name()))"])
def test_the_analysis_refuses_reads_it_cannot_see(source):
    with pytest.raises(ValueError):
        params_read(source)


# The package's layers, bottom first: a module may import its own layer and those below it only.
LAYERS = [
    {"errors"},
    {"config", "io", "numerics"},
    {"runtime", "data"},
    {"modeling"},
    {"engine"},
    {"stage", "cli", "tools"},
]


def layer_of(module: str) -> int:
    head = module.split(".")[1]
    return next(i for i, names in enumerate(LAYERS) if head in names)


def test_imports_point_one_way():
    """tools → engine → modeling → data/runtime → config/io/numerics → errors; never upwards, so no cycle."""
    upward = []
    for file in SRC.joinpath("emopipe").rglob("*.py"):
        module = ".".join(file.relative_to(SRC).with_suffix("").parts)
        if file.name == "__init__.py" and module == "emopipe.__init__":
            continue
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("emopipe."):
                targets = [node.module]
            elif isinstance(node, ast.ImportFrom) and node.module == "emopipe":
                targets = [f"emopipe.{a.name}" for a in node.names]
            else:
                continue
            upward += [f"{module} imports {t}" for t in targets if layer_of(t) > layer_of(module)]
    assert not upward, upward


def test_pack_declares_the_image_folders_it_reads():
    """pack decodes the files the split manifests name; a changed crop (e.g. faces.align) keeps its
    path, so the manifests alone do not change and pack would not re-run without these deps."""
    assert {"data/raw", "data/faces"} <= set(STAGES["pack"]["deps"])


def test_dvc_lists_the_trained_and_the_adapted_model_as_artifacts():
    from dvc.repo import Repo

    with Repo(str(REPO)) as repo:
        artifacts = {name: a for found in repo.artifacts.read().values() for name, a in found.items()}
    outs = {next(iter(o)) if isinstance(o, dict) else o for stage in STAGES.values() for o in stage.get("outs", [])}
    assert {a.path for a in artifacts.values()} == {"models/model.pt", "models/adapted.pt"} <= outs
    assert all(a.type == "model" and a.desc and a.labels for a in artifacts.values())
