"""A full-page PNG of a run's report.html in Debian's headless Chromium (docs/img/report.png).

    python bench/report_screenshot.py runs/demo-fmnist/report.html docs/img/report.png --width 1150
"""
from __future__ import annotations

import argparse
import base64
import os
import tempfile
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("page")
    ap.add_argument("out")
    ap.add_argument("--width", type=int, default=1150)
    ap.add_argument("--max-height", type=int, default=7000)
    args = ap.parse_args()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--disable-dev-shm-usage",
                 f"--window-size={args.width},900", f"--user-data-dir={tempfile.mkdtemp()}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)
    try:
        driver.get(Path(args.page).resolve().as_uri())
        size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        height = min(int(size["height"]) + 1, args.max_height)
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {"width": args.width, "height": height,
                                                                       "deviceScaleFactor": 1, "mobile": False})
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        Path(args.out).write_bytes(base64.b64decode(shot["data"]))
    finally:
        driver.quit()
    print(f"wrote {args.out} ({args.width}×{height})")


if __name__ == "__main__":
    main()
