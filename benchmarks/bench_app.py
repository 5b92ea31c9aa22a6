"""App responsiveness on a 16k-feature SAE: every page's server-side render time, cold and on interaction.

Builds (once, reused on later runs) a workspace with the real pipeline: a cache of the demo model,
two 16,384-latent TopK SAEs trained as one ensemble (no MFR: its per-step matching is not what is measured), their
dashboards, geometry (PCA + UMAP) and matching.
Then runs each page under Streamlit's ``AppTest`` (the same script run a browser session triggers,
without the browser's drawing) and times:

* ``cold``: first render with ``st.cache_data`` cleared (Parquet read through DuckDB),
* ``interaction``: the typical next click (another feature, another map point, a slider),

against the naive way of answering the same dashboard query: pandas reading whole Parquet files and
filtering in memory, measured in the same run. With ``--browser`` it also serves the app with
``workbench app`` and, in headless Chromium (Debian's chromium + chromium-driver), times typing a
feature id on Features and Geometry until the new dashboard is on screen, and every page's first paint: from
navigation in a fresh browser (empty profile, nothing cached) to the page's title on screen (first content) and to
its last chart drawn (complete). Prints one JSON object.

``--demo-workspace PATH`` measures an existing workspace (``workbench demo``'s, read only: nothing is written) instead
of building the 16k one: each page's server-side script time under AppTest, its first paint in fresh Chromium, and on
the Probe page the browser time of probing a 128-token text and of a steered 32-token generation (first click, which
loads the model, and a second one).

    python benchmarks/bench_app.py                          # builds bench-workspace/ first (~40 min on 2 cores)
    python benchmarks/bench_app.py --workspace bench-workspace --repeats 5 --browser
    python benchmarks/bench_app.py --demo-workspace demo-workspace --repeats 3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HOOK = "blocks.1.hook_resid_post"
RUN = "bench16k"
APP = Path(__file__).resolve().parents[1] / "app"


def build_workspace(root: Path, d_sae: int, n_tokens: int, train_tokens: int) -> None:
    """Cache, a 2-member TopK ensemble of ``d_sae`` latents, dashboards, geometry: the files the app reads."""
    from interp.cache.writer import CacheConfig, build_cache
    from interp.pipeline import analyze_features, analyze_geometry
    from interp.store.analysis_folder import AnalysisFolder
    from interp.store.run_folder import RunFolder
    from sae_training.config import TrainConfig
    from sae_training.trainer import train_saes

    stages = {}
    tic = time.perf_counter()
    cache = build_cache(
        CacheConfig(model="demo", data="demo", hooks=(HOOK,), n_tokens=n_tokens, context_size=128),
        root=root / "cached_activations",
        cache_id="demo",
        device="cpu",
    )
    stages["cache_s"] = time.perf_counter() - tic
    run = root / "runs" / RUN
    if not RunFolder(run).evaluated:
        tic = time.perf_counter()
        config = TrainConfig(
            cache=str(cache),
            hook=HOOK,
            architecture="topk",
            d_sae=d_sae,
            k=32,
            n_members=2,
            mfr_coefficient=0.0,
            n_tokens=train_tokens,
            batch_size=4096,
            eval_ce_batches=0,
        )
        train_saes(config, run, resume=RunFolder(run).exists())
        stages["train_s"] = time.perf_counter() - tic
    if not AnalysisFolder(root / "analyses" / RUN / "sae_1").has("matches"):
        tic = time.perf_counter()
        analyze_features(run, root / "analyses", cache_dir=cache)
        stages["features_s"] = time.perf_counter() - tic
    if not AnalysisFolder(root / "analyses" / RUN / "sae_1").has("geometry_map"):
        tic = time.perf_counter()
        analyze_geometry(run, root / "analyses", n_clusters=5, max_features=2000, with_umap=True)
        stages["geometry_s"] = time.perf_counter() - tic
    print(json.dumps({"built": str(root), **{k: round(v, 1) for k, v in stages.items()}}), flush=True)


def interactions(feature_ids: list[int]) -> dict[str, tuple[str, list]]:
    """Per page: its script and the widget changes a user makes after the first render."""
    a, b = feature_ids[:2]
    return {
        "Home": ("Home.py", []),
        "Training": ("pages/1_Training.py", [("selectbox", "run", RUN)]),
        "Features": ("pages/2_Features.py", [("number_input", "feature_id", a), ("number_input", "feature_id", b)]),
        "Features search": (
            "pages/2_Features.py",
            [("radio", "how", "by token it fires on"), ("text_input", "search_token", " the")],
        ),
        "Geometry": (
            "pages/3_Geometry.py",
            [("number_input", "open_feature", a), ("radio", "colour", "log10 frequency")],
        ),
        "Circuits": ("pages/4_Circuits.py", []),
        "Compare": ("pages/5_Compare.py", [("slider", "threshold", 0.5), ("slider", "threshold", 0.9)]),
    }


def set_widget(at, kind: str, key: str, value) -> None:
    widget = getattr(at, kind)(key=key)
    widget.input(value) if kind == "text_input" else widget.set_value(value)


def cold_render(script: str):
    """One first render of ``script`` under ``AppTest`` with ``st.cache_data`` cleared: (the app, seconds)."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    st.cache_data.clear()
    at = AppTest.from_file(str(APP / script), default_timeout=600)
    tic = time.perf_counter()
    at.run()
    seconds = time.perf_counter() - tic
    if at.exception:
        raise RuntimeError(f"{script}: {[e.value for e in at.exception]}")
    return at, seconds


def time_page(script: str, steps: list, repeats: int) -> dict:
    """Median seconds of the cold first render and of each interaction's rerun."""

    cold, clicks = [], []
    for _ in range(repeats):
        at, seconds = cold_render(script)
        cold.append(seconds)
        for kind, key, value in steps:
            set_widget(at, kind, key, value)
            tic = time.perf_counter()
            at.run()
            clicks.append(time.perf_counter() - tic)
            if at.exception:
                raise RuntimeError(f"{script} after {key}={value!r}: {[e.value for e in at.exception]}")
    return {
        "cold_s": round(statistics.median(cold), 3),
        "interaction_s": round(statistics.median(clicks), 3) if clicks else None,
        "interaction_max_s": round(max(clicks), 3) if clicks else None,
    }


def naive_dashboard(folder: Path, feature: int) -> dict[str, pd.DataFrame]:
    """The peer way: read each whole table with pandas, filter in memory."""
    out = {}
    from interp.store.analysis_folder import AnalysisFolder

    for path in AnalysisFolder(folder).table_files():
        frame = pd.read_parquet(path)
        if "feature" in frame:
            out[path.stem] = frame[frame.feature == feature]
    return out


def bench_lookup(folder: Path, feature_ids: list[int]) -> dict:
    """One feature's dashboard tables: ours (DuckDB, filters pushed into the Parquet scan) vs naive pandas."""
    from interp.store import tables

    def run(fn) -> float:
        tic = time.perf_counter()
        for f in feature_ids:
            fn(folder, int(f))
        return (time.perf_counter() - tic) / len(feature_ids)

    ours, naive = run(tables.feature_dashboard), run(naive_dashboard)
    return {"ours_s": round(ours, 4), "naive_pandas_s": round(naive, 4), "speedup": round(naive / ours, 2)}


CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1280,800")
# page -> (path, its st.title): the title on screen is the page's first content
FIRST_PAINT = {"Home": ("/", "Workbench"), "Training": ("/Training", "Training"), "Features": ("/Features", "Features"),
               "Geometry": ("/Geometry", "Geometry"), "Circuits": ("/Circuits", "Circuits"),
               "Compare": ("/Compare", "Compare"), "Attribution": ("/Attribution", "Attribution graphs"),
               "Probe": ("/Probe", "Probe"), "Evaluate": ("/Evaluate", "Evaluate")}
SCRIPTS = {"Home": "Home.py", "Training": "pages/1_Training.py", "Features": "pages/2_Features.py",
           "Geometry": "pages/3_Geometry.py", "Circuits": "pages/4_Circuits.py", "Compare": "pages/5_Compare.py",
           "Attribution": "pages/6_Attribution.py", "Probe": "pages/7_Probe.py", "Evaluate": "pages/8_Evaluate.py"}
# true once the script has finished (no status widget), something is shown and every plotly chart has drawn
SETTLED_JS = (
    "const charts = document.querySelectorAll('[data-testid=\"stPlotlyChart\"]');"
    "return !document.querySelector('[data-testid=\"stStatusWidget\"]')"
    " && document.querySelectorAll('[data-testid=\"stElementContainer\"]').length > 1"
    " && Array.from(charts).filter(c => c.offsetParent !== null).every(c => c.querySelector('.main-svg'));"
)


@contextlib.contextmanager
def serving(root: Path):
    """``workbench app`` on ``root`` at a free port until the block ends; yields its URL."""
    import socket
    import subprocess
    import urllib.request

    from app.commands.app import app_command_line

    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(app_command_line(root, port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, "WORKBENCH_WORKSPACE": str(root)})
    try:
        wait(lambda: urllib.request.urlopen(f"http://localhost:{port}/_stcore/health").status == 200)
        yield f"http://localhost:{port}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


@contextlib.contextmanager
def chromium():
    """A fresh headless Chromium (its own empty profile: nothing cached from an earlier page)."""
    import shutil
    import tempfile

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with tempfile.TemporaryDirectory() as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = shutil.which("chromium")
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
        try:
            yield driver
        finally:
            driver.quit()


def wait(condition, timeout: float = 180.0) -> float:
    """Seconds until ``condition()`` holds (polled every 10 ms)."""
    tic = time.perf_counter()
    while time.perf_counter() - tic < timeout:
        try:
            if condition():
                return time.perf_counter() - tic
        except Exception:  # noqa: BLE001 - the page is still being replaced
            pass
        time.sleep(0.01)
    raise TimeoutError("the page did not show the expected content")


def title_shown(driver, title: str) -> bool:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('h1')).some(h => h.innerText.trim().startsWith(arguments[0]))",
        title)


def settle(driver, hold: float = 1.0) -> float:
    """Seconds until ``SETTLED_JS`` holds and keeps holding for ``hold`` seconds (the time it first held)."""
    tic = time.perf_counter()
    while True:
        wait(lambda: driver.execute_script(SETTLED_JS))
        first = time.perf_counter() - tic
        time.sleep(hold)
        if driver.execute_script(SETTLED_JS):
            return first


def first_paint(url: str, path: str, title: str) -> dict:
    """In a fresh browser: seconds from navigation to the page's title on screen and to the page settled, the
    browser's first contentful paint (Streamlit's empty shell counts), and the JavaScript it fetched."""
    with chromium() as driver:
        driver.set_page_load_timeout(180)
        tic = time.perf_counter()
        driver.get(url + path)  # returns on the load event: the shell, before the script's first message
        wait(lambda: title_shown(driver, title))
        content = time.perf_counter() - tic
        try:
            complete = settle(driver) + content
        except TimeoutError:  # the page never settled: say so, measure the others
            complete = None
        scripts = driver.execute_script(
            "return performance.getEntriesByType('resource').filter(r => r.initiatorType === 'script' ||"
            " r.name.endsWith('.js')).map(r => [r.name.split('/').pop(), r.decodedBodySize || r.encodedBodySize])")
        fcp = driver.execute_script(
            "const p = performance.getEntriesByName('first-contentful-paint')[0]; return p ? p.startTime : null")
    return {"first_content_s": round(content, 3), "complete_s": None if complete is None else round(complete, 3),
            "browser_fcp_s": round(fcp / 1000, 3) if fcp else None,
            "js_mib": round(sum(size or 0 for _, size in scripts) / 2**20, 2),
            "plotly_fetched": any(name.startswith("PlotlyChart") for name, _ in scripts)}


def probe_text(n_tokens: int = 128) -> str:
    """A text of ``n_tokens`` tokens of the demo tokenizer (the Probe page prepends BOS)."""
    from interp.models.loading import demo_tokenizer

    tokenizer = demo_tokenizer()
    words = ("Now is the winter of our discontent made glorious summer by this sun of York; and all the clouds "
             "that lour'd upon our house in the deep bosom of the ocean buried. ") * 20
    ids = tokenizer(words, add_special_tokens=False)["input_ids"][:n_tokens]
    return tokenizer.decode(ids)


REGION_TEXT_JS = "return Array.from(document.querySelectorAll(arguments[0])).map(e => e.innerText).join('\\n')"


def present(driver, how: str, where: str):
    """The element once it is on the page (Streamlit draws after the load event)."""
    found = []
    wait(lambda: found.append(driver.find_element(how, where)) or True)
    return found[0]


def timed_click(driver, label: str, region: str) -> float:
    """Seconds from clicking the button ``label`` to the page showing a new answer: the text of the elements
    matching CSS ``region`` changed from what it was before the click, and the page settled."""
    before = driver.execute_script(REGION_TEXT_JS, region)
    tic = time.perf_counter()
    present(driver, "xpath", f'//button[.//p[text()="{label}"]]').click()
    wait(lambda: driver.execute_script(REGION_TEXT_JS, region) not in ("", before))
    return round(time.perf_counter() - tic + settle(driver, 0.5), 3)


def replace_text(driver, css: str, text: str) -> None:
    from selenium.webdriver.common.keys import Keys

    field = present(driver, "css selector", css)
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(text)
    time.sleep(0.3)


def bench_probe(url: str, analysis: str, n_tokens: int = 32) -> dict:
    """On the Probe page (fresh browser): seconds from the click to the result on screen, for Probe on a
    128-token text and for a steered ``n_tokens``-token generation (default and steered); the first Probe
    click loads the model and the SAE, the second probes another text (one word changed) on the loaded model;
    the two Steer clicks differ by their seed."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    text = probe_text()
    out = {"probe_tokens": 128, "steer_tokens": n_tokens}
    with chromium() as driver:
        driver.set_window_size(1400, 1800)
        driver.get(f"{url}/Probe?analysis={analysis}")
        settle(driver)
        for attempt, words in (("first", text), ("second", text.replace("winter", "summer", 1))):
            replace_text(driver, 'textarea[aria-label="Your text"]', words)
            out[f"probe_{attempt}_s"] = timed_click(driver, "Probe", ".st-key-strip")
        slider = present(driver, "css selector", 'input[type="range"][aria-label="Tokens to generate"]')
        driver.execute_script("arguments[0].focus()", slider)  # the range input is visually hidden: keys go to it
        keys = ActionChains(driver)
        while int(float(slider.get_attribute("value"))) != n_tokens:
            keys.send_keys(Keys.ARROW_RIGHT if int(float(slider.get_attribute("value"))) < n_tokens
                           else Keys.ARROW_LEFT).perform()
        for attempt, seed in (("first", "1"), ("second", "2")):
            replace_text(driver, 'input[aria-label="Seed"]', seed)
            out[f"steer_{attempt}_s"] = timed_click(driver, "Steer", '[data-testid="stCode"]')
    return out


def bench_first_paint(url: str, repeats: int) -> dict:
    """Median first paint of every page over ``repeats`` fresh browsers (pages in turn, so caches warm alike)."""
    runs = {page: [] for page in FIRST_PAINT}
    for _ in range(repeats):
        for page, (path, title) in FIRST_PAINT.items():
            runs[page].append(first_paint(url, path, title))
    out = {}
    for page, rows in runs.items():
        out[page] = {key: round(statistics.median(r[key] for r in rows), 3) if all(r[key] is not None for r in rows)
                     else None for key in ("first_content_s", "complete_s")}
        print(json.dumps({page: out[page]}), file=sys.stderr, flush=True)  # progress
        out[page].update({key: rows[-1][key] for key in ("browser_fcp_s", "js_mib", "plotly_fetched")})
    return out


def bench_browser(root: Path, feature_ids: list[int]) -> dict:
    """Seconds from pressing Enter on a feature id to its dashboard on screen, in headless Chromium."""
    from selenium.webdriver.common.keys import Keys

    with serving(root) as url, chromium() as driver:
        text = lambda: driver.execute_script("return document.body.innerText")  # noqa: E731 - .text is far slower
        out = {}
        for page in ("Features", "Geometry"):
            driver.get(f"{url}/{page}")
            wait(lambda: "Top activating contexts" in text())
            time.sleep(2.0)  # first render and plotly drawing done
            seconds = []
            for feature in feature_ids[2:8]:
                field = driver.find_element("css selector", 'input[type="number"]')
                field.send_keys(Keys.CONTROL, "a")
                field.send_keys(str(feature), Keys.ENTER)
                seconds.append(wait(lambda: f"Feature {feature}" in text() and "Running" not in text()))
            out[page] = {"median_s": round(statistics.median(seconds), 3), "max_s": round(max(seconds), 3)}
        out["first_paint"] = bench_first_paint(url, 1)
        return out


def bench_demo(root: Path, repeats: int, analysis: str) -> dict:
    """An existing workspace, read only: server-side cold script time per page, first paint, Probe timings."""

    os.environ["WORKBENCH_WORKSPACE"] = str(root)
    server = {}
    for page, script in SCRIPTS.items():
        seconds = [cold_render(script)[1] for _ in range(repeats)]
        server[page] = round(statistics.median(seconds), 3)
    load_before = os.getloadavg()[0]
    with serving(root) as url:
        paint = bench_first_paint(url, repeats)
        probe = bench_probe(url, analysis)
    return {"workspace": str(root), "cpus": os.cpu_count(), "load_1min": [round(load_before, 1),
                                                                          round(os.getloadavg()[0], 1)],
            "server_cold_s": server, "first_paint": paint, "probe": probe, "target_first_content_s": 3.0,
            "note": "server_cold_s: the page's script under AppTest, st.cache_data cleared (median); first_paint: "
                    "fresh Chromium per page, navigation to the page title on screen (first_content_s) and to "
                    "no status widget with every chart drawn, held 1 s (complete_s), medians; probe: click to "
                    "result on screen, the first click loads the model"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, default=Path("bench-workspace"))
    parser.add_argument("--d-sae", type=int, default=16384)
    parser.add_argument("--tokens", type=int, default=262_144, help="cached tokens the dashboards are built over")
    parser.add_argument("--train-tokens", type=int, default=500_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--browser", action="store_true", help="also time interactions in headless Chromium")
    parser.add_argument("--demo-workspace", type=Path, default=None,
                        help="measure this existing workspace (read only, no 16k build): pages, first paint, Probe")
    parser.add_argument("--analysis", default="demo-mfr/sae_0", help="with --demo-workspace: the SAE the Probe uses")
    args = parser.parse_args()
    if args.demo_workspace is not None:
        if not (args.demo_workspace / "analyses" / args.analysis).is_dir():
            parser.error(f"{args.demo_workspace} has no analyses/{args.analysis}: make it with `workbench demo "
                         f"--workspace {args.demo_workspace}` or pass --analysis")
        print(json.dumps(bench_demo(args.demo_workspace.resolve(), args.repeats, args.analysis), indent=2))
        return

    root = args.workspace.resolve()
    build_workspace(root, args.d_sae, args.tokens, args.train_tokens)
    os.environ["WORKBENCH_WORKSPACE"] = str(root)
    from interp.store.analysis_folder import AnalysisFolder

    folder = AnalysisFolder(root / "analyses" / RUN / "sae_0")
    features = folder.read_table("features", columns=["feature", "n_fires"])
    rng = np.random.default_rng(0)
    live = features.feature[features.n_fires > 0].to_numpy()
    feature_ids = [int(f) for f in rng.choice(live, size=min(20, len(live)), replace=False)]
    sizes = {p.name: p.stat().st_size for p in folder.table_files()}
    pages = {
        name: time_page(script, steps, args.repeats) for name, (script, steps) in interactions(feature_ids).items()
    }
    print(
        json.dumps(
            {
                "d_sae": int(len(features)),
                "dashboard_tokens": args.tokens,
                "table_bytes": sizes,
                "pages": pages,
                "feature_lookup": bench_lookup(folder, feature_ids),
                "browser_feature_switch": bench_browser(root, feature_ids) if args.browser else None,
                "target_s": 1.0,
                "worst_interaction_s": max(p["interaction_max_s"] or 0 for p in pages.values()),
                "note": "pages: server-side script time under AppTest (no browser drawing), "
                        "cold = st.cache_data cleared; "
                "browser_feature_switch: Enter on a feature id until its dashboard is on screen",
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
