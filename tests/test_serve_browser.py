"""serve's web page in a real headless Chromium (Debian's chromium + chromium-driver, driven by Selenium).

A real WLASL clip is uploaded through the page's file input, and the top-5 are read back from the
page; a webcam recording (Chromium's fake camera) goes through the page's MediaRecorder path.

Without Chromium the tests are skipped, unless ``SLDATA_REQUIRE_BROWSER=1`` (set by ``.ci/run``,
which installs the packages), where a missing browser is a broken setup and fails.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from sltrain.serve import RecognitionServer
from test_serve import CLIP, request, server  # noqa: F401 - the server fixture: an exported model on a free port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
# Offline machines: without the background-networking flags Chromium waits for the network and hangs.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage",
         "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]  # a synthetic webcam
WAIT_S = 120


def _browser_or_skip() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).is_file()]
    if missing:
        message = f"{missing} not installed (apt-get install chromium chromium-driver)"
        if os.environ.get("SLDATA_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    _browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def page_result(driver: object) -> tuple[str, str, list[tuple[str, float]]]:
    """Wait for the page to finish; its state, status text and top glosses as shown."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    status = driver.find_element(By.ID, "status")  # type: ignore[attr-defined]
    WebDriverWait(driver, WAIT_S).until(lambda d: status.get_attribute("data-state") in ("done", "error"))
    rows = driver.find_elements(By.CSS_SELECTOR, "#result tbody tr")  # type: ignore[attr-defined]
    top = [(r.get_attribute("data-gloss"), float(r.get_attribute("data-score"))) for r in rows]
    return status.get_attribute("data-state"), status.text, top


def test_upload_a_real_clip_through_the_page(server: RecognitionServer, browser: object) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By

    host, port = server.server_address[:2]
    browser.get(f"http://{host}:{port}/")  # type: ignore[attr-defined]
    assert "sign-recognizer" in browser.find_element(By.ID, "model").text  # type: ignore[attr-defined]
    browser.find_element(By.ID, "file").send_keys(str(CLIP))  # type: ignore[attr-defined]
    browser.find_element(By.ID, "send").click()  # type: ignore[attr-defined]
    state, text, top = page_result(browser)
    assert state == "done", text
    expected = request(server, "POST", "/predict", CLIP.read_bytes())[1]["top"]
    assert [g for g, _ in top] == [t["gloss"] for t in expected]
    assert [s for _, s in top] == pytest.approx([t["score"] for t in expected], abs=1e-9)
    assert text.startswith("Recognized 24 frames") and text.endswith(expected[0]["gloss"])
    shown = browser.find_elements(By.CSS_SELECTOR, "#result tbody tr td:nth-child(2)")  # type: ignore[attr-defined]
    assert [c.text for c in shown] == [t["gloss"] for t in expected]


def test_webcam_recording_reaches_the_service(server: RecognitionServer, browser: object) -> None:  # noqa: F811
    """Chromium's fake camera (a test pattern, no person) recorded with MediaRecorder: the service decodes
    the WebM and answers that no signer is in view, and the page says so."""
    import time

    from selenium.webdriver.common.by import By

    host, port = server.server_address[:2]
    browser.get(f"http://{host}:{port}/")  # type: ignore[attr-defined]
    browser.find_element(By.ID, "record").click()  # type: ignore[attr-defined]
    time.sleep(2.0)
    browser.find_element(By.ID, "stop").click()  # type: ignore[attr-defined]
    state, text, top = page_result(browser)
    assert state == "error" and text.startswith("no_person:"), text
    assert top == []
