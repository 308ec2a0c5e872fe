"""Stage download: bring one domain's images into data/raw/<domain>/ (images, manifest, rejects)."""
from pathlib import Path

import typer

from emopipe.cli import run
from emopipe.config import expand, load_params
from emopipe.data.sources import fetch
from emopipe.io import atomic_path, write_csv

app = typer.Typer(add_completion=False, help=__doc__)
SECTIONS = {"main": "data", "shift": "shift"}  # domain -> its params section (`${item}` of download@<domain>)
PARAMS = ["data_seed", "${item}", "split.group_pattern", "split.shift_group_pattern"]


@app.command()
def main(
    domain: str = typer.Argument(..., help="main (params: data) or shift (params: shift)"),
    params: Path = typer.Option("params.yaml", help="params file"),
    out: Path = typer.Option(Path("data/raw"), help="parent folder of the domain's output"),
    progress: bool = typer.Option(True, help="show progress bars"),
) -> None:
    if domain not in SECTIONS:
        raise typer.BadParameter(f"domain must be one of {', '.join(SECTIONS)}")
    section = SECTIONS[domain]
    p = load_params(params, only=expand(PARAMS, section))
    with atomic_path(out / domain) as tmp:
        persons = p.split.person_pattern(domain)
        result = fetch(getattr(p, section), section, tmp / "images", p.data_seed, progress, persons)
        manifest = result.manifest.assign(image=[(out / domain / "images" / path).as_posix() for path in result.manifest["path"]])
        write_csv(tmp / "manifest.csv", manifest)
        write_csv(tmp / "rejects.csv", result.rejects)
    typer.echo(f"{domain}: {len(manifest)} images in {manifest['label'].nunique()} classes, {len(result.rejects)} rejected")


if __name__ == "__main__":
    run(app)
