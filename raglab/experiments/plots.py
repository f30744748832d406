"""``dvc plots show`` / ``dvc plots diff`` as an HTML page that renders offline.

DVC's page loads Vega, Vega-Lite and vega-embed from a CDN, which a machine without internet (this repo's
CI, an air-gapped cluster) cannot reach: the page stays blank. This module gives DVC a page template
(``--html-template``) with the three scripts inline, taken from a pinned wheel on the package index (Panel
bundles them), fetched once into ``$RAGLAB_CACHE/wheels`` like the packaged models.

    python -m raglab.experiments.plots                      # dvc plots show: the workspace
    python -m raglab.experiments.plots main workspace       # dvc plots diff: training curves and metrics of both
    python -m raglab.experiments.plots real-cpu-generator   # an experiment (its outputs in the DVC cache or remote)
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import click

from raglab.core.formats import write_text
from raglab.core.machine import cache_dir
from raglab.experiments.dvc import run_dvc
from raglab.models.base import fetch_wheel

SCRIPTS_WHEEL = "panel==1.9.4"
SCRIPTS = [  # in load order: vega-lite and vega-embed need vega
    "panel/dist/bundled/vegaplot/vega@6.1.2",
    "panel/dist/bundled/vegaplot/vega-lite@6.3.0",
    "panel/dist/bundled/vegaplot/vega-embed@7.0.2",
]
PAGE = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<title>raglab plots</title>
{inline_scripts}
<style>
body { font-family: sans-serif; margin: 1.5em; }
table { border-spacing: 15px; }
</style>
</head>
<body>
<h2>raglab: {what}</h2>
{plot_divs}
</body>
</html>
"""


def offline_template(what: str, cache: Path | None = None) -> str:
    """DVC's page template (``{plot_divs}`` placeholder) with Vega, Vega-Lite and vega-embed inline."""
    wheel = fetch_wheel(SCRIPTS_WHEEL, (cache or cache_dir()) / "wheels")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        missing = [s for s in SCRIPTS if s not in names]
        if missing:
            raise click.ClickException(f"{wheel.name} has no {', '.join(missing)}: update SCRIPTS in {__file__}")
        scripts = [zf.read(s).decode("utf-8").replace("</script", "<\\/script") for s in SCRIPTS]
    inline = "\n".join(f"<script>\n{js}\n</script>" for js in scripts)
    # filled by replacement: str.format would trip over the braces of the scripts and the style sheet
    return PAGE.replace("{what}", what).replace("{inline_scripts}", inline)


def render(revisions: tuple[str, ...], out: Path, cache: Path | None = None) -> Path:
    """Run ``dvc plots show`` (no revision) or ``dvc plots diff REVISIONS`` into ``out``; the page's path."""
    what = "plots of " + (" vs ".join(revisions) if revisions else "the workspace")
    template = (cache or cache_dir()) / "plots" / "offline-template.html"
    write_text(template, offline_template(what, cache))
    command = ("plots", "diff", *revisions) if revisions else ("plots", "show")
    run_dvc(*command, "--html-template", str(template), "--out", str(out))
    page = out / "index.html"
    if not page.is_file():
        raise click.ClickException(f"dvc {' '.join(command)} wrote no {page}")
    return page


@dataclass
class Rendered:
    """What the browser found on the page."""
    errors: list[str]  # script errors and console errors (none expected)
    charts: int        # Vega views (one per plot with data)
    marks: int         # the lines, points and bars they drew


def screenshot(page: Path, png: Path, width: int = 1400) -> Rendered:
    """Open ``page`` in headless Chromium (the system's, driven by Playwright), wait for the charts, save a
    full-page PNG; what was rendered."""
    from raglab.experiments.browser import chromium_page

    with chromium_page(width=width) as tab:
        tab.goto(page.resolve().as_uri())
        tab.wait_for_selector("svg.marks, canvas.marks", state="attached", timeout=30_000)
        tab.wait_for_load_state("networkidle")
        tab.screenshot(path=str(png), full_page=True)
        rendered = Rendered(tab.errors, charts=tab.locator("svg.marks, canvas.marks").count(),
                            marks=tab.locator("svg.marks path, svg.marks rect, svg.marks line").count())
    return rendered


@click.command()
@click.argument("revisions", nargs=-1)
@click.option("--out", default="dvc_plots", show_default=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--screenshot", "png", type=click.Path(dir_okay=False, path_type=Path),
              help="Also save a PNG of the page, rendered by headless Chromium.")
def main(revisions: tuple[str, ...], out: Path, png: Path | None) -> None:
    """Render the plots of dvc.yaml (of the workspace, or of REVISIONS compared) into OUT/index.html."""
    page = render(revisions, out)
    click.echo(f"wrote {page} ({page.stat().st_size // 1024} KiB): open it in a browser")
    if png:
        rendered = screenshot(page, png)
        click.echo(f"wrote {png}: {rendered.charts} charts"
                   + (f"; the page reported errors: {rendered.errors}" if rendered.errors else ""))


if __name__ == "__main__":
    main()
