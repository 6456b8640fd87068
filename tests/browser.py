"""A real headless Chromium for page tests: Debian's chromium + chromium-driver driven by selenium.

    def test_page(chromium):                    # the fixture is registered in tests/conftest.py
        chromium.get(url); ...; chromium.console_errors(); chromium.requests()

Nothing is downloaded: the browser and its driver are the system's (scripts/system_deps.sh installs them).
Chromium's own background connections are switched off (this machine has no internet), so `requests()` lists
only what the page itself asked for.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,900")


class Browser:
    """A selenium Chrome driver plus the page's console messages and network requests (from Chrome's logs)."""

    def __init__(self, driver: Any):
        self.driver = driver

    def __getattr__(self, name: str) -> Any:
        return getattr(self.driver, name)

    def console_errors(self) -> list[str]:
        """SEVERE console entries (JS errors, failed loads) since the last call."""
        return [e["message"] for e in self.driver.get_log("browser") if e["level"] == "SEVERE"]

    def requests(self) -> list[str]:
        """URLs pages requested since the last call (Network.requestWillBeSent in the performance log), without
        the browser's own chrome:// pages and inline data: URLs."""
        urls = []
        for entry in self.driver.get_log("performance"):
            msg = json.loads(entry["message"])["message"]
            if msg["method"] == "Network.requestWillBeSent":
                url = msg["params"]["request"]["url"]
                if not url.startswith(("chrome:", "chrome-extension:", "chrome-untrusted:", "data:")):
                    urls.append(url)
        return urls

    def screenshot(self, path: str | Path, width: int | None = None, height: int | None = None) -> Path:
        if width and height:
            self.driver.set_window_size(width, height)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(path))
        return path


def launch(user_data_dir: str) -> Browser:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        raise RuntimeError(f"{CHROMIUM} / {CHROMEDRIVER} missing: run `bash scripts/system_deps.sh` (Debian's "
                           "chromium and chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={user_data_dir}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return Browser(webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER)))


@pytest.fixture
def chromium():
    profile = tempfile.mkdtemp(prefix="alignpipe-chromium-")
    browser = launch(profile)
    try:
        yield browser
    finally:
        browser.driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
