"""End to end in headless Chromium: `workbench app` on a free port, every page opened, a feature and a prompt."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

PAGES = {"Home": "Activation caches", "Training": "logged steps", "Features": "Top activating contexts",
         "Geometry": "Galaxy", "Circuits": "Stored prompt set", "Compare": "MMCS", "Evaluate": "workbench eval"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_app(workspace: Path, stop_wait: float = 30):
    """`workbench app` on ``workspace`` at a free port until the block ends; yields its URL."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "app.cli", "app", "--workspace", str(workspace), "--port",
                                str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               cwd=Path(__file__).resolve().parents[2], start_new_session=True)
    url = f"http://localhost:{port}"
    for _ in range(120):
        try:
            urllib.request.urlopen(f"{url}/_stcore/health", timeout=1)
            break
        except OSError:
            time.sleep(0.5)
    else:
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail(f"workbench app did not start: {process.stdout.read().decode()[-2000:]}")
    try:
        yield url
    finally:
        process.terminate()  # `workbench app` is Streamlit itself (exec): this stops the server
        try:
            process.wait(stop_wait)
        except subprocess.TimeoutExpired:
            pass  # a loaded machine: the kill below ends it
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # and anything it started


@pytest.fixture()
def server(workspace):
    with running_app(workspace, stop_wait=10) as url:
        yield url


@pytest.fixture()
def browser(tmp_path):
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        if os.environ.get("CI") == "true":
            pytest.fail("CI must have Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
        pytest.skip("chromium / chromedriver not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run",
                 "--window-size=1280,800", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    driver.set_window_size(1280, 800)
    yield driver
    driver.quit()


def wait_for_text(driver, text: str, timeout: float = 60) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout, 0.5).until(
        lambda d: text in d.find_element("tag name", "body").text and not d.find_elements(
            "css selector", '[data-testid="stStatusWidget"]'))


@pytest.mark.slow
def test_every_page_in_a_real_browser(server, browser, workspace, tmp_path):
    from selenium.webdriver.common.keys import Keys

    shots = Path(os.environ.get("WORKBENCH_SCREENSHOTS", tmp_path / "screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    for page, text in PAGES.items():
        anchor = None
        browser.get(server + ("/" if page == "Home" else f"/{page}"))
        wait_for_text(browser, text)
        assert "Traceback" not in browser.find_element("tag name", "body").text
        if page == "Features":
            feature = 7
            field = browser.find_element("css selector", 'input[type="number"]')
            field.send_keys(Keys.CONTROL, "a")
            field.send_keys(str(feature), Keys.ENTER)
            label = pd.read_parquet(workspace / "analyses/demo-mfr/sae_0/features.parquet").label[feature]
            wait_for_text(browser, f"Feature {feature}: label {label}")
            anchor = browser.find_element("xpath", f'//p[.//strong[text()="Feature {feature}"]]')
        if page == "Circuits":
            prompt = browser.find_element("css selector", 'input[aria-label="Prompt"]')
            prompt.send_keys(Keys.CONTROL, "a")
            prompt.send_keys("one two three one two three")
            browser.find_element("xpath", '//button[.//p[text()="Show attention"]]').click()
            demo = (Path(__file__).resolve().parents[2] / "interp/models/demo/weights/model.safetensors").exists()
            wait_for_text(browser, "attention (" if demo else "demo weights missing")
        time.sleep(1.0)  # let plotly finish drawing before the screenshot
        if page == "Features":  # the dashboard's header, summary and contexts in the screenshot (after layout settles)
            browser.execute_script(  # to the top, then clear of Streamlit's fixed header bar
                "const el = arguments[0]; el.scrollIntoView(); let box = el.parentElement;"
                "while (box && !['auto', 'scroll'].includes(getComputedStyle(box).overflowY)) box = box.parentElement;"
                "(box || document.scrollingElement).scrollBy(0, -90);", anchor)
            time.sleep(0.3)
        assert "Traceback" not in browser.find_element("tag name", "body").text
        browser.save_screenshot(str(shots / f"{page.lower()}.png"))
        assert (shots / f"{page.lower()}.png").stat().st_size > 10_000


def click_at(driver, x: float, y: float) -> None:
    """A mouse click at viewport coordinates (x, y)."""
    from selenium.webdriver.common.action_chains import ActionChains

    actions = ActionChains(driver)
    actions.w3c_actions.pointer_action.move_to_location(int(x), int(y)).click()
    actions.perform()


def wait_for(driver, condition, timeout: float = 60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, 0.5).until(lambda d: condition(d))


@pytest.mark.slow
def test_a_table_row_opens_its_dashboard_in_the_same_tab_and_the_url_holds_it(server, browser, workspace):
    folder = workspace / "analyses/demo-mfr/sae_0"
    labels = pd.read_parquet(folder / "features.parquet").label
    neighbours = pd.read_parquet(folder / "neighbours.parquet").query("feature == 3").sort_values("rank")
    browser.get(f"{server}/Features?analysis=demo-mfr/sae_0&feature=3")
    wait_for_text(browser, f"Feature 3: label {labels[3]}")
    css = ".st-key-main_neighbours [data-testid='stDataFrame']"  # the grid draws after the page's text
    grid = wait_for(browser, lambda d: (d.find_elements("css selector", css) or [None])[0])
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", grid)
    time.sleep(1.0)
    box = browser.execute_script("const r = arguments[0].getBoundingClientRect(); return [r.left, r.top];", grid)
    click_at(browser, box[0] + 18, box[1] + 35 + 17)  # the first row's selection box (header row: 35 px)
    target = int(neighbours.other.iloc[0])
    wait_for_text(browser, f"Feature {target}: label {labels[target]}")
    assert f"feature={target}" in browser.current_url and "analysis=demo-mfr" in browser.current_url
    assert len(browser.window_handles) == 1  # the same tab, not a new one


@pytest.mark.slow
def test_geometry_takes_a_typed_id_after_a_click_on_the_map(server, browser, workspace):
    from selenium.webdriver.common.keys import Keys

    browser.get(f"{server}/Geometry?analysis=demo-mfr/sae_0")
    wait_for_text(browser, "Galaxy")
    # the map is drawn after the page's text: wait until plotly has its traces
    wait_for(browser, lambda d: d.execute_script(
        "const g = document.querySelector('.st-key-map .js-plotly-plot');"
        "return !!(g && g._fullData && g._fullData.length)"))
    plot = browser.find_element("css selector", ".st-key-map .js-plotly-plot")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", plot)
    time.sleep(1.0)
    x, y, clicked = browser.execute_script(
        "const gd = arguments[0], xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, t = gd._fullData[0];"
        "const r = gd.getBoundingClientRect(), i = 0;"
        "return [r.left + xa._offset + xa.l2p(t.x[i]), r.top + ya._offset + ya.l2p(t.y[i]), Number(t.customdata[i])];",
        plot)
    click_at(browser, x, y)
    field = browser.find_element("css selector", ".st-key-open_feature input")
    wait_for(browser, lambda d: field.get_attribute("value") == str(clicked))
    wait_for_text(browser, f"Feature {clicked}:")
    typed = 5 if clicked != 5 else 6
    field = browser.find_element("css selector", ".st-key-open_feature input")
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(str(typed), Keys.ENTER)
    wait_for_text(browser, f"Feature {typed}:")  # the typed id wins over the earlier click
    assert f"feature={typed}" in browser.current_url


@pytest.mark.slow
def test_a_crystal_links_its_features_and_a_finished_runs_training_page_settles(server, browser, workspace):
    folder = workspace / "analyses/demo-mfr/sae_0"
    labels = pd.read_parquet(folder / "features.parquet").label
    browser.get(f"{server}/Geometry?analysis=demo-mfr/sae_0")
    wait_for_text(browser, "Chance level")
    link = wait_for(browser, lambda d: (d.find_elements(
        "xpath", '//a[@data-testid="stPageLink-NavLink"][.//p[starts-with(text(), "a: ")]]') or [None])[0])
    target = int(link.text.split("a: ")[1].split()[0])  # the drawn crystal's first corner
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", link)
    time.sleep(0.5)
    link.click()
    wait_for_text(browser, f"Feature {target}: label {labels[target]}")
    assert f"feature={target}" in browser.current_url and len(browser.window_handles) == 1
    browser.get(f"{server}/Training?run=demo-mfr")
    wait_for_text(browser, "logged steps")
    busy = []
    for _ in range(24):  # 6 s: a page that reran every 2 s would show its status widget
        busy.append(bool(browser.find_elements("css selector", '[data-testid="stStatusWidget"]')))
        time.sleep(0.25)
    assert not any(busy)
