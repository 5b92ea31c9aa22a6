"""Live questions: probing a 128-token text and a steered 32-token generation (default and steered), timed.

Two set-ups, the model and SAE loaded once (as the app's ``st.cache_resource`` does), medians of
``--repeats`` runs after one warm-up:

* ``demo``: the bundled model with a workspace's SAE (default ``runs/demo-mfr/sae_0`` after ``workbench demo``),
  through the library and through the Probe page under Streamlit's ``AppTest`` (the click's whole rerun,
  the probe's ``st.cache_data`` cleared first; the figures' drawing in a browser is not included);
* ``gpt2``: a GPT-2-small-shaped model with random weights (12 layers, d_model 768, vocabulary 50,257, context
  1,024) and a random SAELens TopK SAE of 24,576 latents (k 32) at ``blocks.6.hook_resid_post``.

    python benchmarks/bench_live.py --workspace DEMO_WORKSPACE --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

TEXT = ("Now is the winter of our discontent made glorious summer by this sun of York; and all the clouds that "
        "lour'd upon our house in the deep bosom of the ocean buried. Now are our brows bound with victorious "
        "wreaths; our bruised arms hung up for monuments; our stern alarums changed to merry meetings, our "
        "dreadful marches to delightful measures. Grim-visaged war hath smooth'd his wrinkled front")
PROMPT = "To be, or not to be, that is the"


def median_seconds(fn, repeats: int) -> dict:
    """Median wall time and median CPU time of this process (on a shared, loaded machine the CPU time with
    one thread is the closer estimate of the wall time on an idle core)."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        tic, tac = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - tic)
        cpu.append(time.process_time() - tac)
    return {"wall_s": round(statistics.median(wall), 4), "cpu_s": round(statistics.median(cpu), 4)}


def bench_demo(workspace: Path, sae_id: str, repeats: int) -> dict:
    from interp.features.dictionary import load_dictionary
    from interp.features.interventions import generate, steer
    from interp.features.probe import probe, probe_tokens, recorded_model_spec
    from interp.models.loading import load_model

    sae_folder = workspace / "runs" / sae_id
    model = load_model(recorded_model_spec(sae_folder, workspace))
    sae = load_dictionary(sae_folder)
    ids = model.tokenizer.encode(TEXT * 2, add_special_tokens=False)[:128]
    edit = steer(sae, sae.hook_name, 0, 8.0)
    out = {"probe_128_tokens": median_seconds(lambda: probe_tokens(model, {"s": sae}, ids).top_features("s"), repeats),
           "steer_32_tokens": median_seconds(lambda: generate(model, PROMPT, [edit], max_new_tokens=32), repeats)}
    text = model.tokenizer.decode(ids)
    assert len(probe(model, {"s": sae}, text).tokens) >= 120
    out.update(bench_page(workspace, sae_id, text, repeats))
    return out


def bench_page(workspace: Path, sae_id: str, text: str, repeats: int) -> dict:
    """The Probe page's rerun after clicking Probe (and Steer), probe / generation caches cleared each time."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    os.environ["WORKBENCH_WORKSPACE"] = str(workspace)
    page = str(Path(__file__).resolve().parents[1] / "app" / "pages" / "7_Probe.py")

    def click(label: str, fill) -> tuple[float, float]:
        at = AppTest.from_file(page, default_timeout=300)
        at.query_params["analysis"] = sae_id
        at.run()
        fill(at)
        st.cache_data.clear()  # the model and SAE stay loaded (st.cache_resource); the answer is recomputed
        tic, tac = time.perf_counter(), time.process_time()
        next(b for b in at.button if b.label == label).click()
        at.run()
        assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]
        return time.perf_counter() - tic, time.process_time() - tac

    def fill_text(at):
        at.text_area(key="probe_text").input(text)

    def fill_prompt(at):
        at.text_input(key="steer_prompt").input(PROMPT)
        at.slider(key="n_tokens").set_value(32)

    probe_times = [click("Probe", fill_text) for _ in range(repeats + 1)][1:]
    steer_times = [click("Steer", fill_prompt) for _ in range(repeats + 1)][1:]
    median = lambda times, i: round(statistics.median(t[i] for t in times), 4)  # noqa: E731
    return {"page_probe_click": {"wall_s": median(probe_times, 0), "cpu_s": median(probe_times, 1)},
            "page_steer_click": {"wall_s": median(steer_times, 0), "cpu_s": median(steer_times, 1)}}


def bench_gpt2(repeats: int) -> dict:
    from sae_lens import TopKSAE, TopKSAEConfig

    from interp.features.dictionary import as_dictionary
    from interp.features.interventions import generate, steer
    from interp.features.probe import probe_tokens
    from interp.models.loading import random_model

    model = random_model(dict(n_layers=12, d_model=768, n_heads=12, d_head=64, d_mlp=3072, d_vocab=50257, n_ctx=1024,
                              act_fn="gelu_new", normalization_type="LN"), seed=0, device="cpu")
    sae = TopKSAE(TopKSAEConfig(d_in=768, d_sae=24576, k=32))
    with torch.no_grad():
        for p in sae.parameters():
            p.normal_(0, 0.02)
    dictionary = as_dictionary(sae)
    hook = "blocks.6.hook_resid_post"
    ids = torch.randint(1, 50257, (128,), generator=torch.Generator().manual_seed(0)).tolist()
    prompt = ids[:12]
    edit = steer(dictionary, hook, 0, 8.0)
    return {"probe_128_tokens": median_seconds(
                lambda: probe_tokens(model, {"s": dictionary}, ids, hooks={"s": hook}, decode=str).top_features("s"),
                repeats),
            "steer_32_tokens": median_seconds(lambda: generate(model, prompt, [edit], max_new_tokens=32), repeats)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, required=True, help="a workspace after `workbench demo`")
    parser.add_argument("--sae", default="demo-mfr/sae_0")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-gpt2", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = {"threads": args.threads, "load_average": os.getloadavg(),
              "demo": bench_demo(args.workspace.resolve(), args.sae, args.repeats)}
    if not args.skip_gpt2:
        result["gpt2_small_shape"] = bench_gpt2(args.repeats)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
