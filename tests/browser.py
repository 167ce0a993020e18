"""Debian's headless chromium + chromedriver through Selenium, for the page tests (`make browsers`)."""
from __future__ import annotations

import contextlib
import os

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
INSTALLED = os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)
MISSING = "Debian's chromium and chromium-driver are not installed (make browsers)"


@contextlib.contextmanager
def headless_chromium(profile_dir, window: str = "900,620", offline: bool = False):
    """A driver with no first-run, sync or update traffic; `offline` also routes every fetch to a dead proxy."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not try to download anything
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", f"--window-size={window}", f"--user-data-dir={profile_dir}"]
    if offline:
        flags += ["--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>"]  # any fetch would fail
    for flag in flags:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()
