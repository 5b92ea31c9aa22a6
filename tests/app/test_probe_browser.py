"""End to end in headless Chromium: `workbench app` on a demo-model workspace, a text typed and probed, a token
clicked on the strip, a feature steered, a feature id followed to its dashboard; screenshots go to
``$WORKBENCH_SCREENSHOTS`` (``docs/screenshots/`` when refreshed)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from interp.features.dictionary import load_dictionary
from interp.features.probe import probe
from tests.app.test_browser import browser, click_at, running_app, wait_for, wait_for_text  # noqa: F401

TEXT = "Now is the winter of our discontent made glorious summer by this sun of York"


@pytest.fixture()
def live_server(live_workspace):
    with running_app(live_workspace) as url:
        yield url


def element(driver, css: str, timeout: float = 60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, 0.5).until(lambda d: d.find_element("css selector", css))


def click(driver, label: str) -> None:
    driver.find_element("xpath", f'//button[.//p[text()="{label}"]]').click()


def probe_on_page(driver, url: str, text: str = TEXT) -> None:
    """Open the Probe page at ``url``, type ``text`` and click Probe."""
    from selenium.webdriver.common.keys import Keys

    driver.get(url)
    wait_for_text(driver, "nothing runs until you click")
    box = element(driver, 'textarea[aria-label="Your text"]')
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(text)
    click(driver, "Probe")


def scroll_to(driver, text: str) -> None:
    element = driver.find_element("xpath", f'//*[text()="{text}"]')
    driver.execute_script(
        "const el = arguments[0]; el.scrollIntoView(); let box = el.parentElement;"
        "while (box && !['auto', 'scroll'].includes(getComputedStyle(box).overflowY)) box = box.parentElement;"
        "(box || document.scrollingElement).scrollBy(0, -90);", element)
    time.sleep(0.5)


@pytest.mark.slow
def test_typing_a_text_and_steering_a_feature_in_a_real_browser(live_server, live_workspace, demo_model, browser,  # noqa: F811
                                                                tmp_path):
    from selenium.webdriver.common.keys import Keys

    shots = Path(os.environ.get("WORKBENCH_SCREENSHOTS", tmp_path / "screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    browser.set_window_size(1280, 1300)
    probe_on_page(browser, f"{live_server}/Probe?analysis=live/sae_0")
    wait_for_text(browser, "Features of token")
    assert "Traceback" not in browser.find_element("tag name", "body").text
    colour = element(browser, 'input[aria-label^="Colour the tokens by feature"]')
    feature = colour.get_attribute("value")  # the text's most active feature
    element(browser, ".st-key-tok_3 button").click()  # a click on the strip's fourth token lists its features
    wait_for_text(browser, "Features of token 3")
    assert "token=3" in browser.current_url
    time.sleep(1.0)  # plotly and the tables draw
    browser.execute_script("document.querySelector('.st-key-strip').scrollIntoView()")
    browser.execute_script("document.querySelector('[data-testid=\"stMain\"]').scrollBy(0, -40)")
    time.sleep(0.5)
    browser.save_screenshot(str(shots / "probe.png"))
    field = element(browser, 'input[aria-label^="Feature (0 to"]')
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(feature)
    prompt = browser.find_element("css selector", 'input[aria-label="Prompt"]')
    prompt.send_keys(Keys.CONTROL, "a")
    prompt.send_keys("To be, or not to be, that is the")
    click(browser, "Steer")
    wait_for_text(browser, f"add feature {feature} (8)")
    body = browser.find_element("tag name", "body").text
    assert "Traceback" not in body and "Default" in body
    time.sleep(1.5)
    scroll_to(browser, "Default")
    browser.save_screenshot(str(shots / "steer.png"))
    assert (shots / "probe.png").stat().st_size > 10_000 and (shots / "steer.png").stat().st_size > 10_000

    probe_on_page(browser, f"{live_server}/Probe?analysis=live/sae_0&token=3")  # the URL holds the token
    wait_for_text(browser, "Features of token 3")  # it is listed again
    css = ".st-key-by_activation [data-testid='stDataFrame']"  # the grid draws after the page's text
    grid = wait_for(browser, lambda d: (d.find_elements("css selector", css) or [None])[0])
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", grid)
    time.sleep(1.0)
    left, top = browser.execute_script("const r = arguments[0].getBoundingClientRect(); return [r.left, r.top];",
                                       grid)
    click_at(browser, left + 20, top + 35 + 17)  # the first row's feature id (header row: 35 px)
    wait_for_text(browser, "Top activating contexts")  # that feature's dashboard, same tab
    target = int(browser.current_url.split("feature=")[1].split("&")[0])
    sae = load_dictionary(live_workspace / "runs" / "live" / "sae_0")
    assert target == int(probe(demo_model, {"s": sae}, TEXT).token_features("s", 3).feature.iloc[0])  # top of token 3
    assert "/Features?" in browser.current_url and "analysis=live" in browser.current_url
    assert len(browser.window_handles) == 1
    wait_for_text(browser, f"Feature {target}")
