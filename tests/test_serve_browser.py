"""The page of ``hlrm serve`` in a real headless Chromium (Debian's ``chromium`` and
``chromium-driver``), driven by Selenium against the real server on a free loopback port.

Skipped only where no Chromium or driver is installed (``.ci/run`` installs both). Each run saves
a screenshot in the test's temporary directory; ``HLRM_SCREENSHOT=docs/serve.png`` copies it
there, and ``HLRM_SERVE_RUN_DIR`` serves that run instead of a one-epoch synthetic HLR (how the
README's screenshot was made, docs/serving.md).
"""

import json
import os
import shutil
import signal
import urllib.request
from pathlib import Path

import pytest

from serve_helpers import trained_run_dir
from test_console_script import SCRIPT
from test_serve import start_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = [
    pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="no chromium / chromedriver installed"),
    pytest.mark.skipif(SCRIPT is None, reason="the hlrm console script is not installed"),
]
webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

TIMEOUT = 60


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    run_dir = os.environ.get("HLRM_SERVE_RUN_DIR") or trained_run_dir(
        tmp_path_factory.mktemp("browser") / "hlr", "hlr", dim=16, history_size=8
    )
    process, url = start_server(run_dir)
    yield url
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=60)


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1280,1100"):  # fmt: skip
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(DRIVER))
    driver.set_page_load_timeout(TIMEOUT)
    yield driver
    driver.quit()


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
        return json.load(response)


def wait_for(driver, condition):
    return WebDriverWait(driver, TIMEOUT).until(lambda d: condition(d) or None)


def test_recommendations_and_explanation_bars_for_a_known_user(server, browser, tmp_path):
    info = get_json(f"{server}/model")
    user = info["example_users"][1]
    browser.get(f"{server}/")
    wait_for(browser, lambda d: info["model"] in d.find_element(By.ID, "model-info").text)
    browser.find_element(By.ID, "user").send_keys(user)
    browser.find_element(By.ID, "recommend-user").click()
    cards = wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#results .rec"))
    assert len(cards) == 10
    expected = get_json(f"{server}/recommend?user={user}&k=10")["items"]
    shown = [card.find_element(By.CSS_SELECTOR, ".title").text for card in cards]
    assert shown == [row["title"] or row["item_id"] for row in expected]
    for card in cards:
        bars = card.find_elements(By.CSS_SELECTOR, ".explanation .bar-row")
        assert bars, "every recommendation of a relation model shows its explanation"
        widths = [bar.find_element(By.CSS_SELECTOR, ".fill").size["width"] for bar in bars]
        assert max(widths) > 0
        assert card.find_elements(By.CSS_SELECTOR, ".module h4")
    assert f"user {user}" in browser.find_element(By.ID, "results-title").text
    shot = tmp_path / "serve.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")
    if os.environ.get("HLRM_SCREENSHOT"):
        shutil.copyfile(shot, Path(os.environ["HLRM_SCREENSHOT"]))


def test_liked_items_and_similar_items_views(server, browser):
    browser.get(f"{server}/")
    browser.find_element(By.ID, "tab-items").click()
    found = wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#item-results .found"))
    liked = [entry.find_element(By.CSS_SELECTOR, ".title").text for entry in found[:2]]
    for entry in found[:2]:
        entry.find_element(By.CSS_SELECTOR, ".pick").click()
    assert len(browser.find_elements(By.CSS_SELECTOR, "#liked .chip")) == 2
    browser.find_element(By.ID, "recommend-items").click()
    cards = wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#results .rec"))
    titles = [card.find_element(By.CSS_SELECTOR, ".title").text for card in cards]
    assert len(titles) == 10 and not set(titles) & set(liked)

    cards[0].find_element(By.CSS_SELECTOR, ".more-like").click()
    wait_for(
        browser,
        lambda d: d.find_element(By.ID, "results-title").text == f"Similar to {titles[0]}",
    )
    similar = browser.find_elements(By.CSS_SELECTOR, "#results .rec .title")
    assert len(similar) == 10 and titles[0] not in [entry.text for entry in similar]

    browser.find_element(By.ID, "tab-user").click()
    browser.find_element(By.ID, "user").clear()
    browser.find_element(By.ID, "user").send_keys("no-such-user\n")
    wait_for(browser, lambda d: "404" in d.find_element(By.ID, "status").text)
    assert not browser.find_elements(By.CSS_SELECTOR, "#results .rec")
