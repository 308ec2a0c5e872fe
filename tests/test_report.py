"""The experiment report: DVC's `exp show --json` shape, variants over seeds, statistics, confusion change."""
import copy
import json
import math
import statistics
import subprocess

import pytest
from typer.testing import CliRunner

from emopipe.errors import UserError
from emopipe.stats import paired_difference
from emopipe_ci.harness import CommandFailed
from emopipe_studies import report

# `dvc exp show --json` of DVC 3.67.1, captured from a tiny-config queue run in a sandbox; trimmed to
# the params and metrics the report reads (per_class, deps and outs dropped). f-small-none-s0 failed:
# its row still carries metrics (the baseline's), so failure must come from executor.state / error.
REAL = json.loads("""
[{"rev": "workspace", "name": null, "data": {"rev": "workspace", "timestamp": null,
  "params": {"params.yaml": {"data": {"seed": 0, "data_seed": 0, "model": "small", "oversample": {"method": "balance"},
             "train": {"epochs": 3, "loss": "ce", "augment": "basic"}}}},
  "metrics": {"metrics/train.json": {"data": {"val_macro_f1": 0.0776}},
              "metrics/eval.json": {"data": {"accuracy": 0.186, "macro_precision": 0.0716, "macro_recall": 0.1905, "macro_f1": 0.081}},
              "metrics/shift.json": {"data": {"plain": {"macro_f1": 0.0778}}}},
  "deps": {}, "outs": {}, "meta": {}}, "error": null, "experiments": null},
 {"rev": "ef9ff431f80f39db6f5a58a811eaed00bde739b7", "name": "main",
  "data": {"rev": "ef9ff431f80f39db6f5a58a811eaed00bde739b7", "timestamp": "2026-11-25T11:49:19",
  "params": {"params.yaml": {"data": {"seed": 0, "data_seed": 0, "model": "small", "oversample": {"method": "balance"},
             "train": {"epochs": 3, "loss": "ce", "augment": "basic"}}}},
  "metrics": {"metrics/train.json": {"data": {"val_macro_f1": 0.0776}},
              "metrics/eval.json": {"data": {"accuracy": 0.186, "macro_precision": 0.0716, "macro_recall": 0.1905, "macro_f1": 0.081}},
              "metrics/shift.json": {"data": {"plain": {"macro_f1": 0.0778}}}},
  "deps": {}, "outs": {}, "meta": {}}, "error": null,
  "experiments": [
   {"revs": [{"rev": "f2f157a0cbc1a0dd1f67c3e3e7f221c37ff8e9d7", "name": "d-wider-targeted-balance-s0",
     "data": {"rev": "f2f157a0cbc1a0dd1f67c3e3e7f221c37ff8e9d7", "timestamp": "2026-11-25T11:55:55",
      "params": {"params.yaml": {"data": {"seed": 0, "data_seed": 0, "model": "wider", "oversample": {"method": "balance"},
                 "train": {"epochs": 2, "loss": "ce", "augment": "targeted"}}}},
      "metrics": {"metrics/train.json": {"data": {"val_macro_f1": 0.0714}},
                  "metrics/eval.json": {"data": {"accuracy": 0.186, "macro_precision": 0.0847, "macro_recall": 0.1905, "macro_f1": 0.083}},
                  "metrics/shift.json": {"data": {"plain": {"macro_f1": 0.043}}}},
      "deps": {}, "outs": {}, "meta": {}}, "error": null, "experiments": null}],
    "executor": {"state": "success", "name": "dvc-task", "local": {"root": null, "log": "/tmp/abl-dev/.dvc/tmp/exps/run/b644/b644.out",
                 "pid": 21993, "returncode": 0, "task_id": "b64461ed49f7e577f2c574bcc6983c0a313f7aaf"}},
    "name": "d-wider-targeted-balance-s0"},
   {"revs": [{"rev": "9dee431911389306fe585ac5eb02dc76800dcf3d", "name": "d-small-basic-s0",
     "data": {"rev": "9dee431911389306fe585ac5eb02dc76800dcf3d", "timestamp": "2026-11-25T11:50:42",
      "params": {"params.yaml": {"data": {"seed": 0, "data_seed": 0, "model": "small", "oversample": {"method": "none"},
                 "train": {"epochs": 2, "loss": "ce", "augment": "basic"}}}},
      "metrics": {"metrics/train.json": {"data": {"val_macro_f1": 0.0723}},
                  "metrics/eval.json": {"data": {"accuracy": 0.1628, "macro_precision": 0.0299, "macro_recall": 0.1667, "macro_f1": 0.0507}},
                  "metrics/shift.json": {"data": {"plain": {"macro_f1": 0.0476}}}},
      "deps": {}, "outs": {}, "meta": {}}, "error": null, "experiments": null}],
    "executor": {"state": "success", "name": "dvc-task", "local": {"root": null, "log": "/tmp/abl-dev/.dvc/tmp/exps/run/3fcf/3fcf.out",
                 "pid": 21793, "returncode": 0, "task_id": "3fcf6a554f23976df970fd54345388a3a3bd889a"}},
    "name": "d-small-basic-s0"},
   {"revs": [{"rev": "c311b79b09a0d4e0c22b901e6f865abf7f527126", "name": "f-small-none-s0",
     "data": {"rev": "c311b79b09a0d4e0c22b901e6f865abf7f527126", "timestamp": "2026-11-25T11:58:03",
      "params": {"params.yaml": {"data": {"seed": 0, "data_seed": 0, "model": "small", "oversample": {"method": "none"},
                 "train": {"epochs": 2, "loss": "ce", "augment": "none"}}}},
      "metrics": {"metrics/train.json": {"data": {"val_macro_f1": 0.0776}},
                  "metrics/eval.json": {"data": {"accuracy": 0.186, "macro_precision": 0.0716, "macro_recall": 0.1905, "macro_f1": 0.081}},
                  "metrics/shift.json": {"data": {"plain": {"macro_f1": 0.0778}}}},
      "deps": {}, "outs": {}, "meta": {}}, "error": {"msg": "Experiment run failed", "type": ""}, "experiments": null}],
    "executor": {"state": "failed", "name": null, "local": {"root": null, "log": "/tmp/abl-dev/.dvc/tmp/exps/run/c311/c311.out",
                 "pid": 22589, "returncode": 255, "task_id": "c311b79b09a0d4e0c22b901e6f865abf7f527126"}},
    "name": "f-small-none-s0"}]}]
""")
COMMIT = "ef9ff431f80f39db6f5a58a811eaed00bde739b7"
TEMPLATE = REAL[1]["experiments"][1]  # d-small-basic-s0


def fake_exp(name, seed, rev=None, f1=0.5, val=0.5, acc=None, shift=0.3, state="success", **params):
    """One `experiments` entry in the real shape, with the given name, params and metrics."""
    exp = copy.deepcopy(TEMPLATE)
    rev = rev or f"{abs(hash(name)):040x}"[:40]
    row = exp["revs"][0]
    row["rev"] = row["data"]["rev"] = rev
    row["name"] = exp["name"] = name
    p = row["data"]["params"]["params.yaml"]["data"]
    p["seed"] = seed
    for key, value in params.items():  # model=..., augment=..., oversample=...
        if key == "model":
            p["model"] = value
        elif key == "oversample":
            p["oversample"]["method"] = value
        else:
            p["train"][key] = value
    m = row["data"]["metrics"]
    m["metrics/eval.json"]["data"].update(macro_f1=f1, accuracy=f1 if acc is None else acc, macro_precision=f1, macro_recall=f1)
    m["metrics/train.json"]["data"]["val_macro_f1"] = val
    m["metrics/shift.json"]["data"]["plain"]["macro_f1"] = shift
    exp["executor"]["state"] = state
    return exp


def shown(*exps):
    data = copy.deepcopy(REAL)
    data[1]["experiments"] = list(exps)
    return data


def test_parse_reads_the_real_dvc_shape():
    commits, exps = report.parse_exp_show(REAL)
    assert list(commits) == [COMMIT]  # the workspace row is not a commit
    assert commits[COMMIT]["train.augment"] == "basic" and commits[COMMIT]["oversample.method"] == "balance"
    by_name = {e.name: e for e in exps}
    assert set(by_name) == {"d-wider-targeted-balance-s0", "d-small-basic-s0", "f-small-none-s0"}
    small = by_name["d-small-basic-s0"]
    assert small.rev == "9dee431911389306fe585ac5eb02dc76800dcf3d" and small.parent == COMMIT
    assert small.params["model"] == "small" and small.params["seed"] == 0 and small.params["train.epochs"] == 2
    assert small.metric("eval", ("macro_f1",)) == 0.0507
    assert small.metric("shift", ("plain", "macro_f1")) == 0.0476
    assert small.metric("train", ("val_macro_f1",)) == 0.0723
    assert small.ok
    failed = by_name["f-small-none-s0"]
    assert failed.state == "failed" and not failed.ok  # it has (stale) metrics, still not counted


def test_queued_and_running_experiments_are_not_counted():
    queued = fake_exp("q-s0", 0, state="queued")
    queued["revs"][0]["data"]["metrics"] = {}
    _, exps = report.parse_exp_show(shown(queued, fake_exp("r-s0", 0, state="running")))
    assert [e.ok for e in exps] == [False, False]
    text = report.build_report({}, exps)
    assert "No finished experiments" in text and "q-s0 (queued)" in text


def test_variants_group_experiments_equal_but_for_the_seed():
    exps = [fake_exp(f"small-basic-s{s}", s) for s in range(3)]
    exps += [fake_exp(f"wider-basic-s{s}", s, model="wider") for s in range(2)]
    exps += [fake_exp("wider-basic-long-s0", 0, model="wider", epochs=9)]  # another param: another variant
    _, parsed = report.parse_exp_show(shown(*exps))
    variants = {v.label: v for v in report.group_variants(parsed)}
    assert set(variants) == {"small-basic", "wider-basic", "wider-basic-long"}
    assert [e.name for e in variants["small-basic"].exps] == ["small-basic-s0", "small-basic-s1", "small-basic-s2"]
    assert variants["small-basic"].seeds == [0, 1, 2]
    assert len(variants["wider-basic"].exps) == 2


def test_table_means_and_sample_stds_over_seeds():
    f1s, vals = [0.50, 0.60, 0.73], [0.40, 0.45, 0.47]
    exps = [fake_exp(f"base-s{s}", s, f1=f, val=v, acc=f + 0.1, shift=0.2) for s, (f, v) in enumerate(zip(f1s, vals))]
    exps += [fake_exp("one-s0", 0, model="wider", f1=0.9, val=0.8)]
    commits, parsed = report.parse_exp_show(shown(*exps))
    text = report.build_report(commits, parsed, baseline="base")
    row = next(line for line in text.splitlines() if line.startswith("| base |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:3] == ["base", "(baseline)", "3"]
    mean, std = statistics.fmean(f1s), statistics.stdev(f1s)  # sample std, ddof=1
    assert std == pytest.approx(0.11532562594670794)
    assert cells[6] == f"{mean:.4f} ± {std:.4f}" == "0.6100 ± 0.1153"           # macro F1
    assert cells[3] == f"{mean + 0.1:.4f} ± {std:.4f}"                          # accuracy
    assert cells[7] == f"{statistics.fmean(vals):.4f} ± {statistics.stdev(vals):.4f}"  # val macro-F1
    assert cells[8] == "0.2000 ± 0.0000"                                        # shift macro-F1
    one = next(line for line in text.splitlines() if line.startswith("| one |"))
    assert "| model=wider | 1 |" in one and "0.9000 ±—" in one
    assert text.index("| base |") < text.index("| one |")  # baseline first
    # paired on seed 0 only: 0.9 − 0.5, not the difference of the means (+0.29)
    assert "| one | model=wider | 1 | +0.4000 [n/a (one paired seed)] | n/a | +0.1000 [n/a (one paired seed)] | n/a |" in text


T_975_2 = 4.302652729911275  # Student's t, 0.975 quantile, 2 degrees of freedom


def test_paired_difference_t_interval():
    base = {0: 0.5, 1: 0.6, 2: 0.7}
    d = paired_difference({0: 0.6, 1: 0.8, 2: 1.0}, base)  # diffs 0.1, 0.2, 0.3: sd 0.1
    assert d.n == 3 and d.mean == pytest.approx(0.2)
    assert d.half_width == pytest.approx(T_975_2 * 0.1 / math.sqrt(3)) == pytest.approx(0.248413, abs=1e-6)
    assert (d.low, d.high) == (pytest.approx(0.2 - 0.248413, abs=1e-6), pytest.approx(0.2 + 0.248413, abs=1e-6))
    assert d.verdict == "within noise"  # the interval holds 0


def test_paired_difference_beyond_noise_both_ways():
    base = {0: 0.50, 1: 0.70, 2: 0.60}  # large seed-to-seed spread, cancelled by the pairing
    better = paired_difference({0: 0.53, 1: 0.72, 2: 0.64}, base)  # diffs .03 .02 .04
    assert better.low > 0 and better.verdict == "better"
    worse = paired_difference({0: 0.46, 1: 0.65, 2: 0.54}, base)  # diffs -.04 -.05 -.06
    assert worse.high < 0 and worse.verdict == "worse"
    same = paired_difference(base, base)
    assert (same.mean, same.half_width, same.verdict) == (0, 0, "within noise")


def test_paired_difference_pairs_only_shared_seeds():
    d = paired_difference({0: 0.6, 5: 0.9}, {0: 0.5, 1: 0.1})
    assert d.n == 1 and d.mean == pytest.approx(0.1)
    assert d.half_width is None and d.low is None and d.high is None and d.verdict == "n/a"
    assert paired_difference({1: 0.5}, {0: 0.5}) is None


def test_comparison_table_pairs_by_seed_and_differing_params():
    base = [fake_exp(f"b-s{s}", s, f1=f) for s, f in enumerate([0.60, 0.70, 0.64])]            # std 0.05
    near = [fake_exp(f"near-s{s}", s, f1=f, augment="none") for s, f in enumerate([0.62, 0.65, 0.69])]  # diffs +.02 -.05 +.05
    far = [fake_exp(f"far-s{s}", s, f1=f, model="wider", oversample="balance", shift=0.3 - 0.01 * s)
           for s, f in enumerate([0.63, 0.72, 0.68])]                                         # diffs +.03 +.02 +.04
    far.append(fake_exp("far-s7", 7, f1=0.1, model="wider", oversample="balance"))            # no baseline seed 7
    commits, parsed = report.parse_exp_show(shown(*base, *near, *far))
    text = report.build_report(commits, parsed, baseline="b")
    assert "| near | train.augment=none | 3 |" in text and "| far | model=wider, oversample.method=balance | 4 |" in text
    assert report.RULE in text
    assert "| variant | changed params | n pairs | Δ test macro-F1 [95% CI] | verdict | Δ shift macro-F1 [95% CI] | verdict |" in text
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.split("(paired seeds)")[1].splitlines()
            if line.startswith("| ") and " pairs " not in line}
    near_d = paired_difference({0: 0.02, 1: -0.05, 2: 0.05}, {0: 0, 1: 0, 2: 0})
    assert rows["near"] == (f"| near | train.augment=none | 3 | +0.0067 [{near_d.low:+.4f}, {near_d.high:+.4f}] | within noise "
                            "| +0.0000 [+0.0000, +0.0000] | within noise |")
    far_d = paired_difference({0: 0.03, 1: 0.02, 2: 0.04}, {0: 0, 1: 0, 2: 0})
    assert far_d.low > 0
    assert rows["far"] == (f"| far | model=wider, oversample.method=balance | 3 | +0.0300 [{far_d.low:+.4f}, {far_d.high:+.4f}] "
                           "| **better** | -0.0100 [-0.0348, +0.0148] | within noise |")
    assert list(rows) == ["far", "near"]  # the baseline gets no row


def test_comparison_with_only_the_baseline():
    commits, parsed = report.parse_exp_show(shown(*(fake_exp(f"b-s{s}", s) for s in range(2))))
    assert "(only the baseline variant)" in report.build_report(commits, parsed)


def test_default_baseline_is_the_variant_closest_to_the_commit():
    # the commit has model=small, augment=basic, oversample=balance
    exps = [fake_exp("x-s0", 0, model="wider", augment="none", oversample="none"),
            fake_exp("y-s0", 0, oversample="balance", epochs=3)]
    commits, parsed = report.parse_exp_show(shown(*exps))
    assert "baseline variant: **y**" in report.build_report(commits, parsed)


def test_only_selects_by_name_prefix():
    _, parsed = report.parse_exp_show(REAL)
    assert [e.name for e in report.select(parsed, ["d-"])] == ["d-wider-targeted-balance-s0", "d-small-basic-s0"]
    assert len(report.select(parsed, None)) == 3


def csv_of(pairs):
    rows = ["path,actual,predicted,p_a"] + [f"img{i}.png,{a},{p},0.5" for i, (a, p) in enumerate(pairs)]
    return "\n".join(rows) + "\n"


def test_confusion_diff_table():
    a = report.confusion(csv_of([("cat", "cat"), ("cat", "dog"), ("dog", "dog"), ("dog", "dog")]))
    b = report.confusion(csv_of([("cat", "cat"), ("cat", "cat"), ("dog", "cat"), ("dog", "dog")]))
    table = report.confusion_diff_table(a, b).splitlines()
    assert table[0] == "| actual \\ predicted | cat | dog | Δ recall |"
    assert table[2] == "| cat | **+1** | -1 | +0.500 |"
    assert table[3] == "| dog | +1 | **-1** | -0.500 |"


def test_compare_sums_a_variant_over_its_seeds():
    exps = [fake_exp(f"a-s{s}", s, rev=f"{s:040d}") for s in range(2)]
    exps.append(fake_exp("b-s0", 0, rev="f" * 40, oversample="balance"))
    preds = {f"{0:040d}": csv_of([("cat", "dog"), ("dog", "dog")]),
             f"{1:040d}": csv_of([("cat", "cat"), ("dog", "dog")]),
             "f" * 40: csv_of([("cat", "cat"), ("dog", "cat")])}
    commits, parsed = report.parse_exp_show(shown(*exps))
    text = report.build_report(commits, parsed, baseline="a", compare=("a", "b-s0"), read_predictions=preds.__getitem__)
    assert "## Confusion change: b-s0 − a (test set)" in text
    assert "summed over 2 vs 1 experiment(s) (a-s0, a-s1 vs b-s0)" in text
    # A = cat→cat 1, cat→dog 1, dog→dog 2 ; B = cat→cat 1, dog→cat 1
    assert "| cat | 0 | -1 | +0.500 |" in text
    assert "| dog | +1 | **-2** | -1.000 |" in text
    missing = report.build_report(commits, parsed, compare=("a", "nope"), read_predictions=preds.__getitem__)
    assert "Not available: no finished experiment for nope." in missing


def test_cli_reads_predictions_from_git_and_writes_atomically(tmp_path):
    repo = tmp_path / "repo"
    (repo / "plots" / "eval").mkdir(parents=True)
    def git(*a):
        return subprocess.run(["git", *a], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()
    git("init", "-q")
    revs = []
    for pairs in ([("cat", "cat"), ("dog", "cat")], [("cat", "cat"), ("dog", "dog")]):
        (repo / "plots/eval/predictions.csv").write_text(csv_of(pairs))
        git("add", "-A")
        git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "x")
        revs.append(git("rev-parse", "HEAD"))
    data = shown(fake_exp("a-s0", 0, rev=revs[0]), fake_exp("b-s0", 0, rev=revs[1], augment="none"))
    (tmp_path / "shown.json").write_text(json.dumps(data))
    out = tmp_path / "reports" / "r.md"
    result = CliRunner().invoke(report.app, ["--repo", str(repo), "--from-json", str(tmp_path / "shown.json"),
                                             "--compare", "a-s0", "b-s0", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text() == result.output
    assert "| dog | -1 | **+1** | +1.000 |" in result.output
    assert [p.name for p in out.parent.iterdir()] == ["r.md"]  # no temporary left behind
    with pytest.raises(CommandFailed, match="`git show 0000000:plots/eval/predictions.csv` failed") as err:
        report.git_show(repo, "0000000", "plots/eval/predictions.csv")
    assert isinstance(err.value, UserError)  # one `error: ...` line under cli.run, git's message included


def test_contrast_pools_every_setting_paired_on_all_other_params():
    # wider − small at two augmentations × two seeds: four pairs, each differing in `model` only
    f1 = {("small", "none", 0): 0.50, ("small", "none", 1): 0.70, ("small", "basic", 0): 0.55, ("small", "basic", 1): 0.60,
          ("wider", "none", 0): 0.53, ("wider", "none", 1): 0.72, ("wider", "basic", 0): 0.59, ("wider", "basic", 1): 0.61}
    exps = [fake_exp(f"{m}-{a}-s{s}", s, f1=v, model=m, augment=a) for (m, a, s), v in f1.items()]
    exps.append(fake_exp("wider-targeted-s0", 0, f1=0.99, model="wider", augment="targeted"))  # no small partner
    _, parsed = report.parse_exp_show(shown(*exps))
    claim = report.Claim("wider beats small", "model", "small", "wider")
    d = report.contrast(parsed, claim)
    diffs = [0.03, 0.02, 0.04, 0.01]
    assert d.n == 4 and d.mean == pytest.approx(statistics.fmean(diffs))
    assert d.verdict == "better"
    rows = report.claims_table(parsed, [claim, report.Claim("augmentation helps", "train.augment", "none", "basic")])
    assert "| wider beats small | model: small → wider | macro F1 | 4 |" in rows[2] and "**holds**" in rows[2]
    assert "| augmentation helps | train.augment: none → basic | macro F1 | 4 |" in rows[3]  # diffs +.05 −.10 +.06 −.11
    assert rows[3].endswith("| open |")
    missing = report.claims_table(parsed, [report.Claim("focal helps", "train.loss", "ce", "focal")])
    assert missing[2].endswith("| 0 | — | — | open (fewer than two pairs) |")
