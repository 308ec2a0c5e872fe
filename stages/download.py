"""Stage download: bring one domain's images into data/raw/<domain>/ (images, manifest, rejects)."""
from pathlib import Path

import typer

from emopipe.cli import run
from emopipe.data.sources import fetch
from emopipe.io import atomic_path, write_csv
from emopipe.stage import group_pattern, load_params

app = typer.Typer(add_completion=False, help=__doc__)
SECTIONS = {"main": "data", "shift": "shift"}


@app.command()
def main(
    domain: str = typer.Argument(..., help="main (params: data) or shift (params: shift)"),
    params: Path = typer.Option("params.yaml", help="params file"),
    out: Path = typer.Option(Path("data/raw"), help="parent folder of the domain's output"),
    progress: bool = typer.Option(True, help="show progress bars"),
) -> None:
    if domain not in SECTIONS:
        raise typer.BadParameter(f"domain must be one of {', '.join(SECTIONS)}")
    p = load_params(params)
    section = SECTIONS[domain]
    with atomic_path(out / domain) as tmp:
        persons = group_pattern(domain, p.split.group_pattern, p.split.shift_group_pattern)
        result = fetch(getattr(p, section), section, tmp / "images", p.data_seed, progress, persons)
        manifest = result.manifest.assign(image=[(out / domain / "images" / path).as_posix() for path in result.manifest["path"]])
        write_csv(tmp / "manifest.csv", manifest)
        write_csv(tmp / "rejects.csv", result.rejects)
    typer.echo(f"{domain}: {len(manifest)} images in {manifest['label'].nunique()} classes, {len(result.rejects)} rejected")


if __name__ == "__main__":
    run(app)
