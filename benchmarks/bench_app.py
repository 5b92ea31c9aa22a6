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
feature id on Features and Geometry until the new dashboard is on screen. Prints one JSON object.

    python benchmarks/bench_app.py                          # builds bench-workspace/ first (~40 min on 2 cores)
    python benchmarks/bench_app.py --workspace bench-workspace --repeats 5 --browser
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
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


def time_page(script: str, steps: list, repeats: int) -> dict:
    """Median seconds of the cold first render and of each interaction's rerun."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    cold, clicks = [], []
    for _ in range(repeats):
        st.cache_data.clear()
        at = AppTest.from_file(str(APP / script), default_timeout=600)
        tic = time.perf_counter()
        at.run()
        cold.append(time.perf_counter() - tic)
        if at.exception:
            raise RuntimeError(f"{script}: {[e.value for e in at.exception]}")
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


def bench_browser(root: Path, feature_ids: list[int]) -> dict:
    """Seconds from pressing Enter on a feature id to its dashboard on screen, in headless Chromium."""
    import shutil
    import socket
    import subprocess
    import urllib.request

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.keys import Keys

    from app.commands.app import app_command_line

    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        app_command_line(root, port),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "WORKBENCH_WORKSPACE": str(root)},
    )
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,800",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    text = lambda: driver.execute_script("return document.body.innerText")  # noqa: E731 - .text is far slower

    def wait(condition, timeout: float = 120.0) -> float:
        tic = time.perf_counter()
        while time.perf_counter() - tic < timeout:
            try:
                if condition():
                    return time.perf_counter() - tic
            except Exception:  # noqa: BLE001 - the page is still being replaced
                pass
            time.sleep(0.01)
        raise TimeoutError("the page did not show the expected text")

    try:
        wait(lambda: urllib.request.urlopen(f"http://localhost:{port}/_stcore/health").status == 200)
        out = {}
        for page in ("Features", "Geometry"):
            driver.get(f"http://localhost:{port}/{page}")
            wait(lambda: "Top activating contexts" in text())
            time.sleep(2.0)  # first render and plotly drawing done
            seconds = []
            for feature in feature_ids[2:8]:
                field = driver.find_element("css selector", 'input[type="number"]')
                field.send_keys(Keys.CONTROL, "a")
                field.send_keys(str(feature), Keys.ENTER)
                seconds.append(wait(lambda: f"Feature {feature}" in text() and "Running" not in text()))
            out[page] = {"median_s": round(statistics.median(seconds), 3), "max_s": round(max(seconds), 3)}
        return out
    finally:
        driver.quit()
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, default=Path("bench-workspace"))
    parser.add_argument("--d-sae", type=int, default=16384)
    parser.add_argument("--tokens", type=int, default=262_144, help="cached tokens the dashboards are built over")
    parser.add_argument("--train-tokens", type=int, default=500_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--browser", action="store_true", help="also time interactions in headless Chromium")
    args = parser.parse_args()

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
