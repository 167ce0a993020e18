"""The page at `/` in a real headless Chromium (Debian's chromium + chromedriver, driven by Selenium).

`make browsers` installs them. Set OCULA_UPDATE_DOCS=1 to refresh docs/serve-page.png from this test.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from browser import INSTALLED, MISSING, headless_chromium

DOCS_SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "serve-page.png"

pytest.importorskip("fastapi")
pytest.importorskip("selenium")
pytestmark = pytest.mark.skipif(not INSTALLED, reason=MISSING)


@pytest.fixture
def browser(tmp_path):
    with headless_chromium(tmp_path / "profile", window="900,620") as driver:
        yield driver


def test_page_shows_the_top_k_with_bars(browser, digits_run, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from ocula.data.builtin import export_builtin
    from ocula.inference.predictor import Classifier
    from ocula.serve import create_app
    from ocula.serve.runner import BackgroundServer

    export_builtin("digits", tmp_path / "digits", split="test", limit=12)
    image = str(sorted((tmp_path / "digits").rglob("*.png"))[7])
    clf = Classifier.load(digits_run, device="cpu")
    want = clf.predict(image, topk=5)
    text_file = tmp_path / "notes.txt"
    text_file.write_text("not an image")

    with BackgroundServer(create_app(clf, "digits")) as server:
        browser.get(server.url + "/")
        assert browser.find_element(By.ID, "model-name").text == "digits"
        browser.find_element(By.ID, "file").send_keys(image)
        wait = WebDriverWait(browser, 20)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#results li"))
        rows = browser.find_elements(By.CSS_SELECTOR, "#results li")
        labels = [r.find_element(By.CLASS_NAME, "label").text for r in rows]
        widths = [float(r.find_element(By.CLASS_NAME, "bar").get_attribute("style").split("width:")[1]
                        .split("%")[0]) for r in rows]
        assert labels == [lab for lab, _ in want.topk]
        assert widths == sorted(widths, reverse=True) and widths[0] > 0
        assert abs(widths[0] - 100 * want.prob) < 0.11  # the bar is the probability, to one decimal
        browser.save_screenshot(str(tmp_path / "page.png"))
        if os.environ.get("OCULA_UPDATE_DOCS") == "1":
            shutil.copyfile(tmp_path / "page.png", DOCS_SCREENSHOT)

        # a file that is not an image: the server's reason is shown, and the bars are cleared
        browser.find_element(By.ID, "file").send_keys(str(text_file))
        wait.until(lambda d: d.find_element(By.ID, "error").text)
        assert browser.find_element(By.ID, "error").text.startswith("415: ")
        assert not browser.find_elements(By.CSS_SELECTOR, "#results li")
