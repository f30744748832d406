"""Headless Chromium (the system's Debian package, driven by Playwright: no browser download), for the
pages this repo renders: the plots page and the assistant's chat page."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator

import click


@contextlib.contextmanager
def chromium_page(width: int = 1400, height: int = 900) -> Iterator:
    """A Playwright page in headless Chromium; its ``errors`` list collects script and console errors."""
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if not executable:
        raise click.ClickException("this needs headless Chromium: apt-get install chromium (make chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.errors = []
            page.on("pageerror", lambda e: page.errors.append(str(e)))
            page.on("console", lambda m: page.errors.append(f"{m.text} ({m.location.get('url')})")
                    if m.type == "error" else None)
            yield page
        finally:
            browser.close()
