"""The pipeline at the size of the field's benchmarks: generated faces at N images, every stage timed.

    python -m emopipe_studies.scale --images 35000 --planted 300     # = emopipe scale; writes reports/scale/35000.json
    python -m emopipe_studies.scale --images 100000 --until pack     # the data stages only

A sandbox copy of the repository gets the generated set at N images (the default class mix),
FER2013-like input (48 px, grey), one training epoch and the default shift domain; then every stage
runs once, one at a time, as DVC runs it (its `cmd` in dvc.yaml). Per stage: wall seconds, images per
second (N / seconds, for the stages whose work grows with N) and the peak resident memory of its process tree. Also: the duplicate groups the
split found (metrics/data.json), how far each class's split fractions fall from the params, and with
`--planted K` how many transformed copies (re-encoded, resized, brightened, cropped) of K images the
near-duplicate grouping puts with their original, and whether it merges distinct pictures. Each run
writes its JSON to reports/scale/ and rewrites reports/scale.md, the table of every run there.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import imagehash
import numpy as np
import pandas as pd
import typer
import yaml
from PIL import Image

from emopipe.cli import run
from emopipe.config import load_params
from emopipe.data.dedup import ThumbnailCorrelation, duplicate_groups
from emopipe.io import atomic_path, write_json
from emopipe.machine import available_cores, cpu_model
from emopipe_ci.harness import make_sandbox, read_params, tool_env

app = typer.Typer(add_completion=False, help=__doc__)
REPORTS = Path("reports/scale")
# The stages whose work grows with the main domain's images (the others: the fixed shift domain, a fixed test sample)
SCALES_WITH_N = ("download@main", "faces@main", "split", "oversample", "pack", "train", "evaluate", "explain")


def overrides(images: int, size: int, channels: int, epochs: int, params: dict) -> dict:
    """The generated set scaled to `images` (the default class mix), at `size` px, trained `epochs`."""
    counts = params["data"]["synthetic_counts"]
    total = sum(counts.values())
    exact = {label: n * images / total for label, n in counts.items()}
    scaled = {label: max(1, int(share)) for label, share in exact.items()}
    for label in sorted(exact, key=lambda c: exact[c] - int(exact[c]), reverse=True)[: images - sum(scaled.values())]:
        scaled[label] += 1  # largest remainders first: the counts sum to `images`
    return {"data": {"synthetic_counts": scaled, "synthetic_size": size}, "input": {"size": size, "channels": channels},
            "train": {"epochs": epochs}}


def stage_commands(repo: Path) -> list[tuple[str, str]]:
    """(DVC's stage name, command) in dvc.yaml's order, foreach stages expanded."""
    out = []
    for name, stage in yaml.safe_load((repo / "dvc.yaml").read_text())["stages"].items():
        foreach = stage.get("foreach")
        if foreach is None:
            out.append((name, stage["cmd"]))
            continue
        items = foreach.items() if isinstance(foreach, dict) else ((item, item) for item in foreach)
        out += [(f"{name}@{key}", stage["do"]["cmd"].replace("${key}", str(key)).replace("${item}", str(item))) for key, item in items]
    return out


def run_stage(repo: Path, command: str, log: Path) -> tuple[float, float]:
    """(wall seconds, peak resident MB of its process tree) of one stage command run in `repo`."""
    started = time.monotonic()
    with log.open("w") as out:
        child = subprocess.Popen(["bash", "-c", command], cwd=repo, env=tool_env(repo), stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
    seconds = time.monotonic() - started
    if os.waitstatus_to_exitcode(status):
        raise typer.BadParameter(f"`{command}` failed in {repo}; its output: {log}")
    return seconds, usage.ru_maxrss / 1024


def split_deviation(data: dict, params: dict) -> float:
    """The largest distance, in percentage points, of any class's share in any split from the params' fraction."""
    counts = pd.DataFrame(data["counts"]).fillna(0)  # classes × splits
    shares = counts.div(counts.sum(axis=1), axis=0)
    wanted = pd.Series({k: params["split"][k] for k in ("train", "val", "test")})
    return round(float((shares[wanted.index] - wanted).abs().to_numpy().max() * 100), 2)


TRANSFORMS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "re-encoded (JPEG q70)": lambda im: _jpeg(im, 70),
    "resized to 80%": lambda im: _jpeg(im.resize((round(im.width * 0.8),) * 2, Image.Resampling.LANCZOS), 90),
    "upscaled 2x": lambda im: _jpeg(im.resize((im.width * 2,) * 2, Image.Resampling.LANCZOS), 90),
    "brightened 10%": lambda im: im.point(lambda v: min(255, int(v * 1.1))),
    "cropped 2% a side": lambda im: _crop(im, 0.02),
    "cropped 4% a side": lambda im: _crop(im, 0.04),
}


def _jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return Image.open(buf).convert("RGB")


def _crop(img: Image.Image, fraction: float) -> Image.Image:
    w, h = img.size
    c = max(1, round(w * fraction))
    return img.crop((c, c, w - c, h - c)).resize((w, h), Image.Resampling.LANCZOS)


def planted(manifest: pd.DataFrame, root: Path, k: int, distance: int, correlation: float, folder: Path, seed: int = 0) -> dict:
    """Recall per transform of the copies of k images grouped with their original, and the groups that join
    two of the k distinct originals (false merges), by the split's own near-duplicate grouping. The
    manifest's image paths are relative to `root`."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    picked = manifest.iloc[np.sort(np.random.default_rng(seed).choice(len(manifest), min(k, len(manifest)), replace=False))]
    paths, sha, phash = [root / p for p in picked["image"]], list(picked["sha256"]), list(picked["phash"])
    of, kinds = list(range(len(picked))), ["original"] * len(picked)
    for name, transform in TRANSFORMS.items():
        for i, path in enumerate(paths[: len(picked)]):
            with Image.open(path) as img:
                copy = transform(img.convert("RGB"))
            paths.append(folder / f"{len(paths)}.png")
            copy.save(paths[-1])
            sha.append(hashlib.sha256(copy.tobytes()).hexdigest())
            phash.append(str(imagehash.phash(copy)))
            of.append(i)
            kinds.append(name)
    confirm = ThumbnailCorrelation(paths, correlation) if correlation > 0 else None
    groups = duplicate_groups(sha, phash, max_distance=distance, confirm=confirm)
    of, kinds = np.array(of), np.array(kinds)
    originals = groups[: len(picked)]
    return {"images": len(picked), "false_merges": int(len(originals) - len(np.unique(originals))),
            "recall": {name: round(float(np.mean(groups[kinds == name] == groups[of[kinds == name]])), 3) for name in TRANSFORMS}}


def markdown(runs: list[dict]) -> str:
    """One table of the runs (columns by N), then each run's planted-duplicate recall."""
    runs = sorted(runs, key=lambda r: r["images"])
    head = "| | " + " | ".join(f"{r['images']:,} images" for r in runs) + " |"
    lines = [head, "|---|" + "---:|" * len(runs)]
    stages = list(dict.fromkeys(s for r in runs for s in r["stages"]))

    def cell(r: dict, stage: str) -> str:
        s = r["stages"].get(stage)
        if s is None:
            return "—"
        rate = f", {r['images'] / s['seconds']:,.0f} img/s" if stage in SCALES_WITH_N else ""
        return f"{s['seconds']:.1f} s{rate}, {s['peak_rss_mb']:,.0f} MB"

    lines += [f"| {stage} | " + " | ".join(cell(r, stage) for r in runs) + " |" for stage in stages]
    lines.append("| data stages together | " + " | ".join(f"{r['data_stages_seconds']:.1f} s" for r in runs) + " |")
    lines.append("| largest peak RSS | " + " | ".join(f"{max(s['peak_rss_mb'] for s in r['stages'].values()):,.0f} MB" for r in runs) + " |")
    lines.append("| duplicate groups (largest, cross-class) | " + " | ".join(
        f"{r['duplicates']['groups']} ({r['duplicates']['largest']}, {r['duplicates']['cross_class_groups']})" for r in runs) + " |")
    lines.append("| largest split-fraction deviation | " + " | ".join(f"{r['split_deviation_points']:.2f} points" for r in runs) + " |")
    first = runs[0]
    lines += ["", f"Machine: {first['machine']['cpu']}, {first['machine']['cores']} cores; input {first['input']}, "
              f"train.epochs {first['epochs']}; near-duplicates: phash within {first['near_duplicate_distance']} bits, "
              f"thumbnail correlation ≥ {first['near_duplicate_correlation']}."]
    for r in runs:
        if r.get("planted"):
            p = r["planted"]
            lines += ["", f"Planted copies of {p['images']} images of the {r['images']:,} (grouped with their original; "
                      f"false merges of distinct originals: {p['false_merges']}):", "",
                      "| copy | recall |", "|---|---:|", *(f"| {k} | {v:.3f} |" for k, v in p["recall"].items())]
    return "\n".join(lines) + "\n"


@app.command()
def main(
    images: int = typer.Option(35000, min=100, help="images of the generated main domain"),
    size: int = typer.Option(48, min=16, help="side of the generated faces and of the model input, px"),
    channels: int = typer.Option(1, help="model input channels: 1 (grey, as FER2013) or 3"),
    epochs: int = typer.Option(1, min=0, help="train.epochs"),
    until: str = typer.Option(None, help="stop after this stage (e.g. pack: the data stages only)"),
    planted_images: int = typer.Option(0, "--planted", min=0, help="also plant transformed copies of this many images"),
    workdir: Path = typer.Option(Path(".scale"), help="sandbox folder (replaced)"),
    out: Path = typer.Option(None, help="JSON to write (default reports/scale/<images>.json); reports/scale.md is rebuilt"),
) -> None:
    """Run the pipeline on N generated images, one stage at a time, and report its cost."""
    if channels not in (1, 3):
        raise typer.BadParameter(f"--channels {channels}: choose 1 or 3")
    out = out or REPORTS / f"{images}.json"
    shutil.rmtree(workdir, ignore_errors=True)
    repo = make_sandbox(workdir, overrides(images, size, channels, epochs, read_params(Path("."))))
    params = read_params(repo)
    load_params(repo / "params.yaml")  # a bad override fails here, before any stage
    commands = stage_commands(repo)
    names = [name for name, _ in commands]
    if until is not None and until not in names:
        raise typer.BadParameter(f"--until {until}: not a stage; stages: {', '.join(names)}")
    result = {"images": sum(params["data"]["synthetic_counts"].values()), "input": f"{size} px, {channels} channel(s)",
              "epochs": epochs, "near_duplicate_distance": params["split"]["near_duplicate_distance"],
              "near_duplicate_correlation": params["split"]["near_duplicate_correlation"],
              "machine": {"cpu": cpu_model(), "cores": available_cores()}, "stages": {}}
    logs = workdir / "logs"
    logs.mkdir()
    for name, command in commands:
        seconds, peak = run_stage(repo, command, logs / f"{name}.log")
        result["stages"][name] = {"seconds": round(seconds, 1), "peak_rss_mb": round(peak)}
        typer.echo(f"{name}: {seconds:.1f} s, peak RSS {peak:.0f} MB", err=True)
        if name == until:
            break
    data_stages = ("download", "faces", "split", "oversample", "pack")
    result["data_stages_seconds"] = round(sum(s["seconds"] for n, s in result["stages"].items() if n.split("@")[0] in data_stages), 1)
    data = json.loads((repo / "metrics" / "data.json").read_text())
    result["duplicates"] = data["duplicate_groups"]["main"]
    result["split_deviation_points"] = split_deviation(data, params)
    if planted_images:
        manifest = pd.read_csv(repo / "data" / "raw" / "main" / "manifest.csv")
        result["planted"] = planted(manifest, repo, planted_images, params["split"]["near_duplicate_distance"],
                                    params["split"]["near_duplicate_correlation"], workdir / "planted")
    write_json(out, result)
    table = markdown([json.loads(f.read_text()) for f in sorted(out.parent.glob("*.json"))])
    with atomic_path(out.parent.with_suffix(".md")) as tmp:
        tmp.write_text("# The pipeline at scale\n\nRegenerate a column: `python -m emopipe_studies.scale --images N "
                       "[--planted 300] [--until pack]` (seconds, images/s, peak RSS per stage).\n\n" + table)
    typer.echo(table)


if __name__ == "__main__":
    run(app)
