"""Stage faces: crop the largest face of every image of one domain (or pass images through when disabled)."""
from pathlib import Path

import pandas as pd
import typer

from emopipe.cli import run
from emopipe.config import load_params
from emopipe.data.faces.crop import DROP_COLUMNS, crop_folder
from emopipe.data.faces.sheet import contact_sheet
from emopipe.data.faces.stats import detection_rates
from emopipe.io import write_csv

app = typer.Typer(add_completion=False, help=__doc__)
PARAMS = ["faces"]


@app.command()
def main(
    domain: str = typer.Argument(..., help="main or shift"),
    params: Path = typer.Option("params.yaml", help="params file"),
    raw: Path = typer.Option(Path("data/raw"), help="download stage output"),
    out: Path = typer.Option(Path("data/faces"), help="parent folder of the domain's output"),
    sheet: Path = typer.Option(Path("plots/faces"), help="folder for the contact sheet PNG"),
    cache: Path = typer.Option(Path(".cache/faces"), help="crop cache (re-runs skip detection)"),
    progress: bool = typer.Option(True, help="show progress bars"),
) -> None:
    p = load_params(params, only=PARAMS)
    manifest = pd.read_csv(raw / domain / "manifest.csv")
    if p.faces.enabled:
        f = p.faces
        manifest, drops = crop_folder(manifest, out / domain / "images", no_face=f.no_face, margin=f.margin,
                                      size=f.size, detector=f.detector, align=f.align, cache_dir=cache, progress=progress)
    else:  # pass-through: the manifest keeps pointing at the downloaded images
        drops = pd.DataFrame(columns=DROP_COLUMNS)
    write_csv(out / domain / "manifest.csv", manifest)
    write_csv(out / domain / "drops.csv", drops)
    contact_sheet(manifest, sheet / f"{domain}.png", drops=drops)
    rates = detection_rates(manifest, drops) if p.faces.enabled else {}
    how = f" ({p.faces.detector}{', aligned' if p.faces.align else ''})" if p.faces.enabled else ""
    typer.echo(f"{domain}: {len(manifest)} images, {len(drops)} dropped; face detection rate per class{how}: {rates or 'disabled'}")


if __name__ == "__main__":
    run(app)
