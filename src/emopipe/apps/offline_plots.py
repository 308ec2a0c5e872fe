"""An HTML page template for `dvc plots show` that renders with no network.

DVC's default page loads Vega, Vega-Lite and Vega-Embed from a CDN, so offline its charts stay
blank. This template inlines the three libraries from the `vl-convert-python` wheel (its
`javascript_bundle()`, ~0.9 MB) instead; `.dvc/config` points `plots.html_template` at it and
`make install` writes it (the file is generated, not committed):

    python -m emopipe.apps.offline_plots            # -> .dvc/plots/offline.html
"""
from __future__ import annotations

from pathlib import Path

import typer

from emopipe.cli import run
from emopipe.io import atomic_path

TEMPLATE = Path(".dvc/plots/offline.html")  # `plots.html_template` in .dvc/config is relative to .dvc/
# DVC fills {plot_divs} and {refresh_tag}; without a {scripts} placeholder it adds no CDN <script> tags.
PAGE_HEAD = '<!DOCTYPE html>\n<html>\n<head>\n<meta charset="utf-8">\n{refresh_tag}\n<title>DVC Plot</title>\n<script>\n'
PAGE_TAIL = "\n</script>\n<style>table { border-spacing: 15px; }</style>\n</head>\n<body>\n{plot_divs}\n</body>\n</html>\n"

app = typer.Typer(add_completion=False, help=__doc__)


def page_template() -> str:
    import vl_convert

    bundle = vl_convert.javascript_bundle()  # assigns vegaEmbed, vegaLite and vega to window
    clash = [p for p in ("{plot_divs}", "{scripts}", "{refresh_tag}", "</script>") if p in bundle]
    if clash:
        raise RuntimeError(f"the vl-convert JavaScript bundle contains {clash[0]!r}, which would break the page template")
    return PAGE_HEAD + bundle + PAGE_TAIL


def write_template(repo: Path = Path(".")) -> Path:
    target = repo / TEMPLATE
    with atomic_path(target) as tmp:
        tmp.write_text(page_template())
    return target


@app.command()
def main(repo: Path = typer.Option(Path("."), help="DVC repository to write .dvc/plots/offline.html into")) -> None:
    typer.echo(f"offline plot template written to {write_template(repo)}")


if __name__ == "__main__":
    run(app)
