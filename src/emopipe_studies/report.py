"""A markdown report of DVC experiments: variants (experiments equal but for `seed`), mean ± std over seeds.

    python -m emopipe_studies.report --out reports/experiments.md
    python -m emopipe_studies.report --only abl- --baseline abl-small-basic --compare abl-small-basic abl-small-basic-balance

Test metrics come from metrics/eval.json, validation macro-F1 from metrics/train.json and
shift macro-F1 from metrics/shift.json (plain). Each variant is compared with the baseline by
paired differences over the seeds both were run with (`paired_difference`). `--compare A B` adds
the confusion matrix of B minus that of A (experiment names or variant names; a variant sums over
its seeds), read from plots/eval/predictions.csv in each experiment's commit.
"""
from __future__ import annotations

import csv
import io
import json
import math
import re
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

from emopipe.cli import run as run_app
from emopipe.io import atomic_path
from emopipe.stats import CONFIDENCE, PairedDiff, paired_difference
from emopipe_ci.harness import run

SEED_KEYS = ("seed",)          # params that vary within a variant
PREDICTIONS = "plots/eval/predictions.csv"
# (column header, metrics file stem, key path in that file)
COLUMNS = (
    ("accuracy", "eval", ("accuracy",)),
    ("macro P", "eval", ("macro_precision",)),
    ("macro R", "eval", ("macro_recall",)),
    ("macro F1", "eval", ("macro_f1",)),
    ("val macro-F1", "train", ("val_macro_f1",)),
    ("shift macro-F1", "shift", ("plain", "macro_f1")),
)
TEST_F1 = "macro F1"
VAL_F1 = "val macro-F1"
SHIFT_F1 = "shift macro-F1"
CI = f"{CONFIDENCE:.0%} CI"
RULE = ("variant and baseline are paired by seed (only seeds both were run with); per pair "
        "d = metric(variant) − metric(baseline), so what a seed does to both runs alike cancels. The table gives "
        f"mean d over the n pairs with a {CONFIDENCE:.0%} Student-t interval, mean ± t({(1 + CONFIDENCE) / 2:g}, n−1)"
        "·sd(d)/√n. A difference is beyond seed noise (**better** or **worse**) only when the interval excludes 0, "
        "otherwise within noise; with one paired seed there is no interval")

app = typer.Typer(add_completion=False, help=__doc__)


@dataclass
class Exp:
    name: str
    rev: str
    parent: str                              # the baseline commit the experiment was run from
    state: str                               # success | failed | queued | running | ...
    params: dict[str, Any] = field(default_factory=dict)    # flattened: 'train.lr' ('file:key' outside params.yaml)
    metrics: dict[str, Any] = field(default_factory=dict)   # metrics file stem -> its JSON

    def metric(self, stem: str, path: tuple[str, ...]) -> float | None:
        value: Any = self.metrics.get(stem)
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    @property
    def ok(self) -> bool:
        return self.state == "success" and self.metric("eval", ("macro_f1",)) is not None


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict) or not tree:
        return {prefix: tree} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


# ---------------------------------------------------------------------------- DVC's JSON, in one place
def parse_exp_show(shown: list[dict]) -> tuple[dict[str, dict[str, Any]], list[Exp]]:
    """`dvc exp show --json` (DVC 3.x) -> ({commit rev: flattened params}, experiments).

    Shape relied on: a list of commit rows {"rev", "name", "data", "experiments"}; "workspace" is one
    of them. `experiments` is null or a list of {"name", "executor": {"state"} | null, "revs": [row]}
    where each row is {"rev", "name", "data": {"params": {file: {"data": {...}}},
    "metrics": {path: {"data": {...}}}}, "error": null | {...}}.
    """
    def params_of(data: dict) -> dict[str, Any]:
        flat: dict[str, Any] = {}
        for file, content in (data.get("params") or {}).items():
            prefix = "" if file == "params.yaml" else f"{file}:"
            for key, value in flatten((content or {}).get("data") or {}).items():
                flat[prefix + key] = value
        return flat

    commits, exps = {}, []
    for row in shown:
        if row.get("rev") == "workspace":
            continue
        commits[row["rev"]] = params_of(row.get("data") or {})
        for exp in row.get("experiments") or []:
            state = ((exp.get("executor") or {}).get("state")) or None
            for rev in exp.get("revs") or []:
                data = rev.get("data") or {}
                metrics = {Path(path).stem: (content or {}).get("data") or {}
                           for path, content in (data.get("metrics") or {}).items()}
                exps.append(Exp(
                    name=rev.get("name") or exp.get("name") or rev["rev"][:7],
                    rev=rev["rev"], parent=row["rev"],
                    state=state or ("failed" if rev.get("error") else "success"),
                    params=params_of(data), metrics=metrics,
                ))
    return commits, exps


def load_json(path: Path) -> list[dict]:
    if not Path(path).is_file():
        raise typer.BadParameter(f"--from-json {path} does not exist; give the output of `dvc exp show --json`")
    return json.loads(Path(path).read_text())


def exp_show(repo: Path, all_commits: bool = False) -> list[dict]:
    return json.loads(run(repo, "dvc", "exp", "show", "--json", *(["--all-commits"] if all_commits else [])).stdout)


# ---------------------------------------------------------------------------- variants and statistics
@dataclass
class Variant:
    label: str
    key: tuple
    exps: list[Exp]

    @property
    def params(self) -> dict[str, Any]:
        return {k: v for k, v in self.exps[0].params.items() if k not in SEED_KEYS}

    @property
    def seeds(self) -> list[Any]:
        return [e.params.get("seed") for e in self.exps]

    def values(self, column: str) -> list[float]:
        _, stem, path = next(c for c in COLUMNS if c[0] == column)
        return [v for e in self.exps if (v := e.metric(stem, path)) is not None]

    def by_seed(self, column: str) -> dict[Any, float]:
        """{seed: metric} over the experiments that have it; experiments repeating a seed are averaged."""
        _, stem, path = next(c for c in COLUMNS if c[0] == column)
        runs: dict[Any, list[float]] = {}
        for e in self.exps:
            if (v := e.metric(stem, path)) is not None:
                runs.setdefault(e.params.get("seed"), []).append(v)
        return {seed: statistics.fmean(vals) for seed, vals in runs.items()}

    def stat(self, column: str) -> tuple[float, float | None, int]:
        """(mean, sample std or None for one value, n)."""
        vals = self.values(column)
        if not vals:
            return math.nan, None, 0
        return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else None), len(vals)


@dataclass(frozen=True)
class Claim:
    """A claim "changing `key` from `before` to `after` raises `column`", tested by `contrast`."""
    text: str
    key: str
    before: Any
    after: Any
    column: str = TEST_F1


def contrast(exps: list[Exp], claim: Claim) -> PairedDiff | None:
    """Δ `claim.column` when `claim.key` goes from `before` to `after` and nothing else changes.

    Runs are paired on every other param, the seed included, so one claim pools all the settings it
    was run under (wider − small at each augmentation and seed): more pairs, the same rule as
    `paired_difference`, and the interval covers the effect averaged over those settings."""
    _, file_stem, path = next(c for c in COLUMNS if c[0] == claim.column)
    sides: dict[Any, dict[tuple, float]] = {claim.before: {}, claim.after: {}}
    for e in exps:
        value = e.params.get(claim.key)
        if value in sides and (m := e.metric(file_stem, path)) is not None:
            sides[value][variant_key(e, ignore=(claim.key,))] = m
    return paired_difference(sides[claim.after], sides[claim.before])


def claims_table(exps: list[Exp], claims: list[Claim]) -> list[str]:
    """Markdown rows: each claim with its pooled paired Δ, 95% interval and holds | fails | open."""
    lines = [f"| claim | change | metric | n pairs | Δ [{CI}] | half-width | verdict |", "|---|---|---|---:|---:|---:|---|"]
    for c in claims:
        d = contrast(exps, c)
        cells = [c.text, f"{c.key}: {fmt_value(c.before)} → {fmt_value(c.after)}", c.column, str(d.n if d else 0)]
        if d is None or d.half_width is None:
            cells += [f"{d.mean:+.4f}" if d else "—", "—", "open (fewer than two pairs)"]
        else:
            verdict = {"better": "**holds**", "worse": "**fails** (the opposite is beyond noise)"}.get(d.verdict, "open")
            cells += [f"{d.mean:+.4f} [{d.low:+.4f}, {d.high:+.4f}]", f"{d.half_width:.4f}", verdict]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def stem(name: str) -> str:
    return re.sub(r"-s\d+$", "", name)


def variant_key(exp: Exp, ignore: tuple[str, ...] = SEED_KEYS) -> tuple:
    """The experiment's params but `ignore`, hashable: equal keys = runs that differ only in `ignore`."""
    return tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in exp.params.items() if k not in ignore))


def group_variants(exps: list[Exp]) -> list[Variant]:
    """Experiments with equal params but for the seed form one variant, named after its experiments' stem."""
    groups: dict[tuple, list[Exp]] = {}
    for exp in exps:
        groups.setdefault(variant_key(exp), []).append(exp)
    variants = []
    for key, members in groups.items():
        members.sort(key=lambda e: (str(e.params.get("seed")), e.name))
        stems = sorted({stem(e.name) for e in members})
        variants.append(Variant(label="+".join(stems), key=key, exps=members))
    return variants


def find_variant(variants: list[Variant], name: str) -> Variant:
    for v in variants:
        if v.label == name or any(e.name == name for e in v.exps):
            return v
    raise typer.BadParameter(f"no variant or experiment named {name!r}; have: {', '.join(v.label for v in variants)}")


def default_baseline(variants: list[Variant], commits: dict[str, dict[str, Any]]) -> Variant:
    """The variant closest to the params of the commit the experiments were run from."""
    parent = commits.get(variants[0].exps[0].parent, {}) if variants else {}
    return min(variants, key=lambda v: len(differences(v.params, parent)))


def differences(params: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    keys = (set(params) | set(base)) - set(SEED_KEYS)
    return {k: params.get(k) for k in sorted(keys) if params.get(k) != base.get(k)}


def fmt_value(value: Any) -> str:
    return json.dumps(value, separators=(",", ":")) if isinstance(value, (dict, list)) else str(value)


def fmt_stat(mean: float, std: float | None, n: int) -> str:
    if n == 0:
        return "—"
    return f"{mean:.4f} ± {std:.4f}" if std is not None else f"{mean:.4f} ±—"


def fmt_paired(d: PairedDiff | None, n_pairs: int) -> tuple[str, str]:
    """(Δ [CI] cell, verdict cell); the pair count is added when it differs from the row's `n_pairs`."""
    if d is None:
        return "—", "—"
    count = f" (n={d.n})" if d.n != n_pairs else ""
    if d.half_width is None:
        return f"{d.mean:+.4f} [n/a (one paired seed)]{count}", "n/a"
    cell = f"{d.mean:+.4f} [{d.low:+.4f}, {d.high:+.4f}]{count}"
    return cell, (f"**{d.verdict}**" if d.verdict in ("better", "worse") else d.verdict)


# ---------------------------------------------------------------------------- confusion matrices
def git_show(repo: Path, rev: str, path: str) -> str:
    return run(repo, "git", "show", f"{rev}:{path}").stdout


def confusion(csv_text: str) -> Counter:
    """Counter{(actual, predicted): n} from a predictions CSV with `actual` and `predicted` columns."""
    return Counter((row["actual"], row["predicted"]) for row in csv.DictReader(io.StringIO(csv_text)))


def confusion_diff_table(a: Counter, b: Counter) -> str:
    """Markdown table of B − A, rows actual, columns predicted, plus the recall change per class."""
    classes = sorted({c for pair in (a | b) for c in pair})
    lines = ["| actual \\ predicted | " + " | ".join(classes) + " | Δ recall |",
             "|---|" + "---:|" * (len(classes) + 1)]
    for actual in classes:
        cells = []
        for pred in classes:
            d = b[(actual, pred)] - a[(actual, pred)]
            cells.append(f"**{d:+d}**" if d and actual == pred else (f"{d:+d}" if d else "0"))
        recalls = []
        for m in (a, b):
            total = sum(m[(actual, p)] for p in classes)
            recalls.append(m[(actual, actual)] / total if total else math.nan)
        lines.append(f"| {actual} | " + " | ".join(cells) + f" | {recalls[1] - recalls[0]:+.3f} |")
    return "\n".join(lines)


def summed_confusion(exps: list[Exp], read) -> Counter:
    total: Counter = Counter()
    for exp in exps:
        total.update(confusion(read(exp.rev)))
    return total


# ---------------------------------------------------------------------------- the report
def order_variants(variants: list[Variant], baseline: Variant, sort: str) -> list[Variant]:
    rest = [v for v in variants if v is not baseline]
    if sort == "val":
        rest.sort(key=lambda v: -(v.stat(VAL_F1)[0] if v.stat(VAL_F1)[2] else -math.inf))
    else:
        rest.sort(key=lambda v: v.label)
    return [baseline, *rest]


def comparison_table(variants: list[Variant], base: Variant) -> list[str]:
    """Markdown rows: each variant against the baseline by paired seeds, test and shift macro-F1."""
    lines = [f"| variant | changed params | n pairs | Δ test macro-F1 [{CI}] | verdict "
             f"| Δ shift macro-F1 [{CI}] | verdict |", "|---|---|---:|---:|---|---:|---|"]
    for v in variants:
        test = paired_difference(v.by_seed(TEST_F1), base.by_seed(TEST_F1))
        shift = paired_difference(v.by_seed(SHIFT_F1), base.by_seed(SHIFT_F1))
        n_pairs = test.n if test else 0
        changed = ", ".join(f"{k}={fmt_value(x)}" for k, x in differences(v.params, base.params).items()) or "—"
        cells = [v.label, changed, str(n_pairs), *fmt_paired(test, n_pairs), *fmt_paired(shift, n_pairs)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def build_report(
    commits: dict[str, dict[str, Any]],
    exps: list[Exp],
    *,
    baseline: str | None = None,
    compare: tuple[str, str] | None = None,
    read_predictions=None,
    sort: str = "name",
    title: str = "Experiment report",
    preamble: str = "",
    appendix: str = "",
) -> str:
    """The markdown report. `read_predictions(rev) -> csv text` is needed for `compare`."""
    done = [e for e in exps if e.ok]
    not_done = [e for e in exps if not e.ok]
    out = [f"# {title}", ""]
    if preamble:
        out += [preamble.rstrip(), ""]
    if not done:
        out += ["No finished experiments."]
        if not_done:
            out += ["", "Not finished: " + ", ".join(f"{e.name} ({e.state})" for e in not_done)]
        return "\n".join(out) + "\n"
    variants = group_variants(done)
    base = find_variant(variants, baseline) if baseline else default_baseline(variants, commits)
    ordered = order_variants(variants, base, sort)

    out += [f"{len(done)} experiments in {len(variants)} variants; baseline variant: **{base.label}** "
            f"(`{', '.join(f'{k}={fmt_value(v)}' for k, v in base.params.items() if k in _varying(variants)) or 'as committed'}`).",
            "Test metrics from metrics/eval.json, val macro-F1 from metrics/train.json, shift macro-F1 from "
            "metrics/shift.json (plain); each mean ± sample std (ddof=1) over seeds, `±—` = one seed.", ""]
    header = ["variant", "differs from baseline", "n", *(c[0] for c in COLUMNS)]
    out += ["| " + " | ".join(header) + " |", "|---|---|---:|" + "---:|" * len(COLUMNS)]
    for v in ordered:
        diff = differences(v.params, base.params)
        changed = "(baseline)" if v is base else ", ".join(f"{k}={fmt_value(x)}" for k, x in diff.items()) or "—"
        cells = [fmt_stat(*v.stat(c[0])) for c in COLUMNS]
        out.append(f"| {v.label} | {changed} | {len(v.exps)} | " + " | ".join(cells) + " |")
    out += ["", "Seeds per variant: " + "; ".join(f"{v.label}: {', '.join(map(str, v.seeds))}" for v in ordered), ""]

    others = [v for v in ordered if v is not base]
    out += [f"## Against the baseline {base.label} (paired seeds)", "", f"Rule: {RULE}.", ""]
    out += comparison_table(others, base) if others else ["(only the baseline variant)"]
    out.append("")

    if compare:
        if read_predictions is None:
            raise ValueError("compare needs read_predictions")
        sides = []
        for name in compare:
            single = [e for e in done if e.name == name]
            found = [v for v in variants if v.label == name]
            sides.append((name, single or (found[0].exps if found else [])))
        (name_a, exps_a), (name_b, exps_b) = sides
        out += [f"## Confusion change: {name_b} − {name_a} (test set)", ""]
        if not exps_a or not exps_b:
            missing = " and ".join(n for n, e in sides if not e)
            out += [f"Not available: no finished experiment for {missing}.", ""]
        else:
            conf_a, conf_b = (summed_confusion(s, read_predictions) for s in (exps_a, exps_b))
            out += [f"Rows actual, columns predicted; counts summed over {len(exps_a)} vs {len(exps_b)} experiment(s) "
                    f"({', '.join(e.name for e in exps_a)} vs {', '.join(e.name for e in exps_b)}); bold = diagonal "
                    "(correct) change.", "", confusion_diff_table(conf_a, conf_b), ""]

    if not_done:
        out += ["## Not finished", "", *(f"- {e.name}: {e.state}" for e in not_done), ""]
    if appendix:
        out += [appendix.rstrip(), ""]
    return "\n".join(out).rstrip() + "\n"


def _varying(variants: list[Variant]) -> set[str]:
    keys = set().union(*(v.params for v in variants))
    return {k for k in keys if len({json.dumps(v.params.get(k), sort_keys=True) for v in variants}) > 1}


def select(exps: list[Exp], only: list[str] | None) -> list[Exp]:
    return [e for e in exps if not only or any(e.name.startswith(p) for p in only)]


def write_report(path: Path, text: str) -> None:
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(text)


@app.command()
def main(
    repo: Path = typer.Option(Path("."), help="DVC repository to read the experiments of"),
    only: list[str] = typer.Option(None, "--only", help="experiment name prefix (repeatable)"),
    baseline: str = typer.Option(None, help="baseline variant or experiment name (default: closest to the commit's params)"),
    compare: tuple[str, str] | None = typer.Option(None, help="A B: confusion matrix of B minus A (experiments or variants)"),
    sort: str = typer.Option("name", help="variant order after the baseline: name | val (val macro-F1, best first)"),
    out: Path = typer.Option(None, help="write the markdown here (atomically) as well as printing it"),
    all_commits: bool = typer.Option(False, "--all-commits", "-A", help="experiments of every commit, not only HEAD's"),
    from_json: Path = typer.Option(None, "--from-json", help="read `dvc exp show --json` output from this file"),
    title: str = typer.Option("Experiment report", help="report title"),
) -> None:
    """Print (and optionally write) the markdown report."""
    shown = load_json(from_json) if from_json else exp_show(repo, all_commits)
    commits, exps = parse_exp_show(shown)
    text = build_report(
        commits, select(exps, only), baseline=baseline,
        compare=compare if compare and all(compare) else None,
        read_predictions=lambda rev: git_show(repo, rev, PREDICTIONS), sort=sort, title=title,
    )
    if out:
        write_report(out, text)
    typer.echo(text, nl=False)


if __name__ == "__main__":
    run_app(app)
