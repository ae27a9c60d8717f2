"""What every browser test module shares: one Debian Chromium per module (never downloaded),
and the screenshots the test run leaves for reviewers and the staff guide."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
# The closed network refuses Chromium's background connections; keep it from trying.
FLAGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: docs/staff-guide.md links here; `make test` fills it.
SCREENSHOTS = Path(os.environ.get("CAMPAIGNS_SCREENSHOTS") or ROOT / "build" / "screenshots")


def screenshot(page: Page, name: str) -> None:
    """The whole page as build/screenshots/<name>.png (or under $CAMPAIGNS_SCREENSHOTS)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            "Debian's chromium is missing: `make test` installs it (scripts/ensure-chromium)"
        )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield launched
        launched.close()
