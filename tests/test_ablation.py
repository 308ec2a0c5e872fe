"""The seed-grid runner: the queued commands, the phase-2 choice (validation only), queue parsing."""
import json
import shlex
from types import SimpleNamespace

import pytest
import typer
import yaml
from typer.testing import CliRunner

from emopipe.errors import UserError
from emopipe_studies import ablation, report

COMMIT = "a" * 40


def exp(name, seed, model, augment, val, test, oversample="none", state="success"):
    """One `dvc exp show --json` experiment entry (DVC 3.67 shape, see tests/test_report.py)."""
    params = {"seed": seed, "model": model, "oversample": {"method": oversample},
              "train": {"epochs": 2, "loss": "ce", "augment": augment}}
    metrics = {"metrics/train.json": {"data": {"val_macro_f1": val}},
               "metrics/eval.json": {"data": {"accuracy": test, "macro_precision": test, "macro_recall": test, "macro_f1": test}},
               "metrics/shift.json": {"data": {"plain": {"macro_f1": 0.3}}}}
    rev = f"{abs(hash(name)):x}".rjust(40, "0")[:40]
    return {"revs": [{"rev": rev, "name": name, "error": None if state == "success" else {"msg": "Experiment run failed"},
                      "data": {"rev": rev, "params": {"params.yaml": {"data": params}}, "metrics": metrics}}],
            "executor": {"state": state}, "name": name}


def phase1_results(prefix="", failed_best=False):
    """Fake phase-1 results: wider-basic best on validation, small-none best on test."""
    val = {"small-none": 0.50, "small-basic": 0.55, "small-targeted": 0.52,
           "wider-none": 0.51, "wider-basic": 0.60, "wider-targeted": 0.58}
    exps = []
    for variant, v in val.items():
        model, augment = variant.split("-")
        for seed in range(3):
            test = 0.90 if variant == "small-none" else 0.40
            state = "failed" if failed_best and variant == "wider-basic" else "success"
            exps.append(exp(f"{prefix}{variant}-s{seed}", seed, model, augment, v + 0.01 * seed, test, state=state))
    return [{"rev": "workspace", "name": None, "data": None, "experiments": None},
            {"rev": COMMIT, "name": "main", "data": {"params": {}}, "experiments": exps}]


def test_pick_best_uses_validation_never_test():
    _, exps = report.parse_exp_show(phase1_results())
    best, scores = ablation.pick_best(exps, "", 3)
    assert best == "wider-basic"
    assert scores["wider-basic"] == (pytest.approx(0.61), 3)
    assert scores["small-none"][0] == pytest.approx(0.51)  # the best on test, ignored


def test_pick_best_skips_failed_experiments_and_other_prefixes():
    _, exps = report.parse_exp_show(phase1_results(failed_best=True))
    assert ablation.pick_best(exps, "", 3)[0] == "wider-targeted"
    assert ablation.pick_best(exps, "other-", 3) == (None, {})


def dry_run(tmp_path, *args):
    (tmp_path / "params.yaml").write_text("seed: 0\ntrain:\n  epochs: 7\n")
    result = CliRunner().invoke(ablation.app, ["--repo", str(tmp_path), "--dry-run", *args])
    assert result.exit_code == 0, result.output
    commands = [shlex.split(line) for line in result.output.splitlines() if line.startswith("dvc exp run")]
    return result.output, commands


def overrides(cmd):
    return dict(cmd[i + 1].split("=", 1) for i, arg in enumerate(cmd) if arg == "-S")


def test_dry_run_prints_the_24_commands(tmp_path):
    (tmp_path / "shown.json").write_text(json.dumps(phase1_results("m-")))
    output, commands = dry_run(tmp_path, "--prefix", "m-", "--seeds", "3", "--epochs", "5", "--from-json", str(tmp_path / "shown.json"),
                               "--extra", "data.source=folder", "--extra", "data.folder=/data/mux")
    assert len(commands) == 24
    assert all(c[:4] == ["dvc", "exp", "run", "--queue"] and c[4] == "--name" for c in commands)
    names = [c[5] for c in commands]
    assert len(set(names)) == 24
    phase1 = {f"m-{m}-{a}-s{s}" for m in ("small", "wider") for a in ("none", "basic", "targeted") for s in range(3)}
    assert set(names[:18]) == phase1
    assert names[18:] == [f"m-wider-basic-balance-s{s}" for s in range(3)] + [f"m-wider-basic-focal-s{s}" for s in range(3)]
    for cmd in commands:
        o = overrides(cmd)
        assert o["train.epochs"] == "5" and o["data.source"] == "folder" and o["data.folder"] == "/data/mux"
        assert cmd[5].endswith(f"-s{o['seed']}")
        assert cmd[-2:] == ["evaluate", "shift_eval"]  # the stages whose metrics the report reads
    assert overrides(commands[0]) == {"model": "small", "train.augment": "none", "oversample.method": "none",
                                           "seed": "0", "train.epochs": "5", "data.source": "folder", "data.folder": "/data/mux"}
    balance, focal = overrides(commands[18]), overrides(commands[21])
    assert (balance["model"], balance["train.augment"], balance["oversample.method"]) == ("wider", "basic", "balance")
    assert "train.loss" not in balance
    assert (focal["model"], focal["train.augment"], focal["oversample.method"], focal["train.loss"]) == ("wider", "basic", "none", "focal")
    assert "best phase-1 variant by mean val macro-F1 = wider-basic" in output
    assert output.count("dvc queue start -j 2") == 2


def test_dry_run_without_results_uses_params_epochs_and_a_placeholder(tmp_path):
    output, commands = dry_run(tmp_path, "--seeds", "2", "--jobs", "1")
    assert len(commands) == 12 + 4
    assert all(overrides(c)["train.epochs"] == "7" for c in commands)
    assert [c[5] for c in commands[12:]] == ["BEST-balance-s0", "BEST-balance-s1", "BEST-focal-s0", "BEST-focal-s1"]
    assert overrides(commands[12])["model"] == "<BEST>"
    assert "dvc queue start -j 1" in output


def test_extra_may_not_override_the_grid():
    assert ablation.parse_extra(["data.source=folder", "a.b=x=y"]) == {"data.source": "folder", "a.b": "x=y"}
    for bad in (["seed=3"], ["model=wider"], ["train.epochs=3"]):
        with pytest.raises(typer.BadParameter, match=f"--extra {bad[0].split('=')[0]} is set by the grid itself"):
            ablation.parse_extra(bad)
    with pytest.raises(typer.BadParameter, match="--extra wants KEY=VALUE, got 'nokey'"):
        ablation.parse_extra(["nokey"])


def test_a_repo_without_params_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(ablation.app, ["--repo", str(tmp_path), "--dry-run"], env={"COLUMNS": "300"})
    assert result.exit_code != 0 and "has no params.yaml" in result.output


def test_worker_threads_split_the_cores(monkeypatch):
    monkeypatch.setattr(ablation, "available_cores", lambda: 2)
    env, threads = ablation.worker_env(2)
    assert threads == 1 and env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "1"
    assert ablation.worker_env(1)[1] == 2 and ablation.worker_env(4)[1] == 1
    assert env["OMP_WAIT_POLICY"] == "PASSIVE"  # parallel workers share the cores
    assert env["EMOPIPE_NUMERICS"] == "portable" and env["ONEDNN_MAX_CPU_ISA"] == "AVX2"  # pinned in this process
    native, _ = ablation.worker_env(2, "native")
    assert native["EMOPIPE_NUMERICS"] == "native" and "ONEDNN_MAX_CPU_ISA" not in native and "MKL_CBWR" not in native


def test_queue_and_status_go_through_dvcs_api(tmp_path):
    """Experiments queued from one DVC process, read back as data (no text parsing), and removed."""
    import subprocess

    from emopipe_ci.harness import tool_env

    def sh(*args):
        subprocess.run(args, cwd=tmp_path, env=tool_env(), check=True, capture_output=True)

    (tmp_path / "params.yaml").write_text("seed: 0\nmodel: small\ntrain: {epochs: 1}\n")
    (tmp_path / "dvc.yaml").write_text("stages:\n" + "".join(
        f"  {t}:\n    cmd: echo {t}\n    params: [seed, model]\n" for t in ablation.TARGETS))
    sh("git", "init", "-q")
    sh("dvc", "init", "-q")
    sh("git", "add", "-A")
    sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init")
    planned = ablation.expand(1, [("small-none", {"model": "small"})], 2, 3, {}, "t-")
    ablation.queue_experiments(tmp_path, planned, "test")
    statuses, workers = ablation.queue_status(tmp_path)
    assert statuses == {"t-small-none-s0": "Queued", "t-small-none-s1": "Queued"} and workers == 0
    sh("dvc", "queue", "remove", "--all")
    assert ablation.queue_status(tmp_path) == ({}, 0)


def test_fmt_time():
    assert ablation.fmt_time(65.4) == "1m05s" and ablation.fmt_time(3725) == "1h02m05s"


class FakeRepo:
    """Stands in for dvc.repo.Repo: two outputs, one `cache: false`; or raises `error` on open."""

    error: Exception | None = None

    def __init__(self, root):
        if self.error:
            raise self.error
        self.index = SimpleNamespace(outs=[SimpleNamespace(def_path="data/packed", use_cache=True),
                                           SimpleNamespace(def_path="plots/eval", use_cache=False)])

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_uncached_outputs_surface_real_errors(monkeypatch, tmp_path):
    import sys

    import dvc.repo
    from dvc.exceptions import DvcException

    monkeypatch.setattr(dvc.repo, "Repo", FakeRepo)
    assert ablation.uncached_outputs(tmp_path) == {"plots/eval"}
    monkeypatch.setattr(FakeRepo, "error", DvcException("broken dvc.yaml"))
    with pytest.raises(UserError, match=f"DVC cannot read the outputs of {tmp_path}: broken dvc.yaml"):
        ablation.uncached_outputs(tmp_path)
    monkeypatch.setattr(FakeRepo, "error", AttributeError("'Index' object has no attribute 'outs'"))  # a DVC API change
    with pytest.raises(AttributeError):
        ablation.uncached_outputs(tmp_path)
    monkeypatch.setitem(sys.modules, "dvc.repo", None)  # DVC's Python package not importable here
    assert ablation.uncached_outputs(tmp_path) == set()


def test_cache_preflight_names_uncached_outputs_but_not_parents_of_outputs(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cached = "a" * 32 + ".dir"
    (cache / "files" / "md5" / "aa").mkdir(parents=True)
    (cache / "files" / "md5" / "aa" / cached[2:]).write_text("[]")
    lock = {"stages": {
        "download@main": {"outs": [{"path": "data/raw/main", "md5": cached}]},
        "download@shift": {"outs": [{"path": "data/raw/shift", "md5": "b" * 32 + ".dir"}]},   # not in the cache
        "pack": {"deps": [{"path": "data/raw", "md5": "c" * 32 + ".dir"},                   # parent of outputs
                          {"path": "data/extra", "md5": "d" * 32 + ".dir"}],                # a folder nobody makes
                 "outs": [{"path": "plots/pack", "md5": "e" * 32 + ".dir"}]},                # cache: false
    }}
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    monkeypatch.setattr(ablation, "run", lambda *a, **k: type("Done", (), {"stdout": f"{cache}\n"})())
    monkeypatch.setattr(ablation, "uncached_outputs", lambda repo: {"plots/pack"})
    assert ablation.missing_dirs(tmp_path) == ["data/extra", "data/raw/shift"]
