"""A real Chromium driven by Playwright, for the page's browser tests and its screenshots.

Playwright's own browser download cannot work where there is no internet beyond the package
registries, so this drives the distribution's `chromium` (`apt-get install chromium`;
`.ci/run` installs it) through Playwright's `executable_path`.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager

from playwright.sync_api import Browser, sync_playwright

ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


def chromium_path() -> str | None:
    """Debian's (or Ubuntu's) chromium on the PATH."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


@contextmanager
def chromium(path: str) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()
