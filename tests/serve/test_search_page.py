"""The search page in a real headless browser: Debian's Chromium, driven by Playwright (never its own download)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Flags that run Chromium headless in a container without a GPU, a sandbox or network chatter.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def open_browser(playwright, profile: Path):
    """Chromium from Debian's package with a fresh profile folder (``launch_persistent_context``)."""
    return playwright.chromium.launch_persistent_context(
        str(profile),
        executable_path=CHROMIUM,
        args=CHROMIUM_ARGS,
        headless=True,
        viewport={"width": 1000, "height": 760},
    )


def search_in_page(page, base: str, query: str, *, wait_for: str = "li.hit") -> None:
    page.goto(base + "/")
    page.wait_for_selector("#index option", state="attached", timeout=30_000)
    page.fill("#query", query)
    page.click("#go")
    page.wait_for_selector(wait_for, timeout=30_000)


def test_typing_a_query_shows_ranked_results(serve, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="the browser extra is not installed")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    base = serve(api_key="page-key")
    with sync_api.sync_playwright() as playwright:
        browser = open_browser(playwright, tmp_path / "profile")
        try:
            page = browser.new_page()
            page.goto(base + "/")
            page.fill("#query", "web server")
            page.click("#go")
            page.wait_for_selector("#status.error", timeout=30_000)
            assert "API key" in page.text_content("#status")  # asked for, and the key box opened
            page.fill("#api-key", "page-key")
            page.dispatch_event("#api-key", "change")
            search_in_page(page, base, "web server")
            hits = page.query_selector_all("li.hit")
            assert len(hits) == 8
            assert hits[0].query_selector(".doc-id").text_content() == "nginx"
            assert "web server" in hits[0].query_selector(".text").text_content()
            scores = [float(h.query_selector(".score").text_content()) for h in hits]
            assert scores == sorted(scores, reverse=True)
            assert page.text_content("#index option").startswith("tiny (8 docs)")
            assert "hits from tiny" in page.text_content("#status")
            shot = tmp_path / "page.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 5000
        finally:
            browser.close()
