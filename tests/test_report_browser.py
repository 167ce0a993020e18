"""report.html in a real headless Chromium (Debian's chromium + chromedriver, driven by Selenium), opened
from disk with the network off: every section is there and every inlined image decodes.

`make browsers` installs them; without them this test is skipped and counted, as the serve page test is.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from browser import INSTALLED, MISSING, headless_chromium

from ocula.cli import main

SECTIONS = ["summary", "curves", "evaluation", "calibration", "errors", "audit", "export"]

pytest.importorskip("selenium")
pytestmark = pytest.mark.skipif(not INSTALLED, reason=MISSING)


@pytest.fixture
def browser(tmp_path):
    with headless_chromium(tmp_path / "profile", window="1150,900", offline=True) as driver:
        yield driver


def test_report_renders_offline_with_every_section_and_image(browser, reported_run, tmp_path):
    from selenium.webdriver.common.by import By

    page = tmp_path / "report.html"
    assert main(["report", reported_run, "--out", str(page)]) == 0
    browser.get(page.as_uri())
    sections = browser.find_elements(By.CSS_SELECTOR, "body > section")
    assert [s.get_attribute("id") for s in sections] == SECTIONS
    assert all(s.get_attribute("data-status") == "ran" for s in sections)
    assert all(s.find_element(By.TAG_NAME, "h2").text for s in sections)
    # every <img> is a data: URI that the browser decodes to a picture of a real size
    images = browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const imgs = Array.from(document.images);
        Promise.all(imgs.map(i => i.decode().then(() => [i.dataset.image, i.naturalWidth, i.naturalHeight,
                                                          i.src.slice(0, 22)],
                                                  e => [i.dataset.image, 0, 0, String(e)])))
               .then(done);""")
    assert sorted(name for name, *_ in images) == ["confusion", "curves", "errors", "reliability"]
    for name, width, height, prefix in images:
        assert prefix == "data:image/png;base64,", (name, prefix)
        assert width > 50 and height > 50, (name, width, height)
    # the per-class table is a real table the browser laid out: one row per class plus the header
    rows = browser.find_elements(By.CSS_SELECTOR, "#per-class tr")
    assert len(rows) >= 11
    # nothing tried to reach the network: resource timing lists no http(s) fetch
    fetched = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert not [u for u in fetched if u.startswith("http")], fetched
    browser.save_screenshot(str(tmp_path / "report.png"))
    assert Path(tmp_path / "report.png").stat().st_size > 10_000
