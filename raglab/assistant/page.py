"""The chat page driven in headless Chromium: ask questions as a person would, read what the page shows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class Shown:
    """What the chat page showed for one question."""
    messages: list[str]  # the assistant's message bubbles: the answer, then the route and passages (titled)
    titles: list[str]    # the titles of the route and passages panels


def converse(url: str, questions: list[str], png: Path | None = None, timeout_s: float = 300) -> list[Shown]:
    """Ask ``questions`` on the chat page at ``url`` in headless Chromium, one after another, waiting for each
    reply; optionally save a screenshot of the conversation."""
    import re
    import time

    from playwright.sync_api import expect

    from raglab.experiments.browser import chromium_page

    shown = []
    with chromium_page(width=1200, height=1100) as page:
        page.goto(url)
        box = page.locator("#question textarea")
        expect(box).to_be_visible(timeout=timeout_s * 1000)
        for question in questions:
            before = page.locator('#chat [data-testid="bot"]').count()
            box.fill(question)
            page.locator('#question [data-testid="submit-button"]').click()
            expect(page.locator('#chat [data-testid="bot"]')).not_to_have_count(before, timeout=timeout_s * 1000)
            tracker = page.locator('#question [data-testid="status-tracker"]')
            expect(tracker).to_have_class(re.compile(r"\bhide\b"), timeout=timeout_s * 1000)
            bots = page.locator('#chat [data-testid="bot"]')
            messages, deadline = None, time.monotonic() + timeout_s
            while time.monotonic() < deadline:  # the answer streams in: read it once it stops changing
                seen = [bots.nth(i).inner_text() for i in range(before, bots.count())]
                if seen == messages:
                    break
                messages = seen
                page.wait_for_timeout(1500)
            titles = page.locator("#chat .thought-group .title").all_inner_texts()
            shown.append(Shown(messages, titles))
        if png is not None:
            # the conversation from its start: the chat scrolls itself to the newest message
            page.evaluate("document.querySelectorAll('#chat *').forEach(e => { e.scrollTop = 0; })")
            png.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(png), full_page=True, animations="disabled")
        if page.errors:
            raise RuntimeError(f"the chat page reported errors: {page.errors}")
    return shown
