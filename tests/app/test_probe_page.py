"""The Probe page under AppTest on a demo-model workspace: nothing runs until a click, the tables shown equal
the API's answers on the same model, steering shows the API's two continuations, bad input is a note."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from interp.features.dictionary import load_dictionary
from interp.features.interventions import dose_response, generate, steer
from interp.features.probe import probe
from interp.store.analysis_folder import AnalysisFolder
from tests.app.test_pages import array, chart

APP = Path(__file__).resolve().parents[2] / "app"
TEXT = "Now is the winter of our discontent made glorious summer by this sun of York"
HOOK = "blocks.1.hook_resid_post"


@pytest.fixture()
def live_env(live_workspace, monkeypatch):
    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(live_workspace))
    return live_workspace


def opened(**params) -> AppTest:
    at = AppTest.from_file(str(APP / "pages" / "7_Probe.py"), default_timeout=120)
    for key, value in params.items():
        at.query_params[key] = value
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def submit(at: AppTest, label: str) -> AppTest:
    next(b for b in at.button if b.label == label).click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def token_tables(at: AppTest):
    """The token's two feature tables, in page order: by activation, by direct logit effect."""
    columns = ["feature", "label", "activation", "share", "logit_effect"]
    return [f.value for f in at.dataframe if list(f.value.columns)[:5] == columns]


def test_typing_a_text_shows_the_probes_answers(live_env, demo_model):
    at = opened()
    assert "probed_text" not in at.session_state and not at.dataframe  # nothing ran on opening
    at.text_area(key="probe_text").input(TEXT)
    submit(at, "Probe")
    sae = load_dictionary(live_env / "runs" / "live" / "sae_0")
    expected = probe(demo_model, {"s": sae}, TEXT)
    codes = expected.codes["s"]
    assert at.number_input(key="colour_feature").value == int(codes.max(0).toarray().argmax())
    at.button(key="tok_3").click().run()  # a click on the strip's fourth token
    assert at.query_params["token"] == "3" and at.session_state["probe_token"] == 3
    shown, by_effect = token_tables(at)
    table = expected.token_features("s", 3, "activation", 20)
    assert shown.feature.tolist() == table.feature.tolist()
    np.testing.assert_allclose(shown.activation, table.activation, atol=1e-5)
    assert by_effect.logit_effect.abs().is_monotonic_decreasing
    assert any("/Features?analysis=live/sae_0&feature=" in m.value for m in at.markdown)


def test_steering_shows_the_apis_default_and_steered_continuations(live_env, demo_model):
    at = opened(analysis="live/sae_0", feature="7")
    assert at.number_input(key="steer_feature").value == 7
    at.slider(key="coefficient").set_value(12.0)
    at.text_input(key="steer_prompt").input("To be, or not to be")
    at.slider(key="n_tokens").set_value(6)
    submit(at, "Steer")
    sae = load_dictionary(live_env / "runs" / "live" / "sae_0")
    expected = generate(demo_model, "To be, or not to be", [steer(sae, HOOK, 7, 12.0)], max_new_tokens=6, seed=0)
    shown = [c.value for c in at.code]
    assert shown == ["To be, or not to be" + expected.default_text, "To be, or not to be" + expected.steered_text]
    curve = dose_response(demo_model, "To be, or not to be", steer(sae, HOOK, 7, 0.0), list(np.linspace(0, 24, 9)))
    figure = chart(at, "dose_response")
    np.testing.assert_allclose(array(figure["data"][0]["y"]), curve.probability, rtol=1e-4)


@pytest.mark.parametrize("text, note", [("   ", "the text is empty"), ("\x00\x01", "the text is empty")])
def test_bad_text_is_a_note_not_a_traceback(live_env, text, note):
    at = opened()
    at.text_area(key="probe_text").input(text)
    submit(at, "Probe")
    assert any(note in e.value for e in at.error)


def test_a_huge_coefficient_cannot_be_entered_and_a_long_prompt_is_a_note(live_env):
    at = opened()
    assert at.slider(key="coefficient").max == 50.0  # the form bounds the coefficient: no NaN, no inf
    at.text_input(key="steer_prompt").input("word " * 200)
    submit(at, "Steer")
    assert any("more than the model's context" in e.value for e in at.error)


def test_the_features_page_links_each_dashboard_to_the_probe(live_env):
    at = AppTest.from_file(str(APP / "pages" / "2_Features.py"), default_timeout=120)
    at.query_params["analysis"] = "live/sae_1"
    at.query_params["feature"] = "5"
    at.run()
    assert not at.exception
    assert any("/Probe?analysis=live/sae_1&feature=5" in m.value for m in at.markdown)


def test_the_specific_features_table_is_the_apis(live_env, demo_model):
    from interp.features.probe import specific_features

    at = opened()
    at.text_area(key="probe_text").input(TEXT)
    submit(at, "Probe")
    shown = next(f.value for f in at.dataframe if "ratio" in f.value.columns)
    stored = AnalysisFolder(live_env / "analyses" / "live" / "sae_0").read_table("features").sort_values("feature")
    result = probe(demo_model, {"s": load_dictionary(live_env / "runs" / "live" / "sae_0")}, TEXT)
    expected = specific_features(result, "s", (stored.mean_activation * stored.frequency).to_numpy(), 20)
    assert shown.feature.tolist() == expected.feature.tolist()


def probed_in_app(**params) -> AppTest:
    """The Probe page opened inside the app (Home the entry script, so its links can switch pages), TEXT probed."""
    from tests.app.test_pages import open_linked

    at = open_linked("pages/7_Probe.py", **params)
    at.text_area(key="probe_text").input(TEXT)
    return submit(at, "Probe")


def click_cell(at: AppTest, key: str, row: int, column: str) -> AppTest:
    """A click on one cell of the table ``key``, as the browser reports it."""
    at.session_state[key] = {"selection": {"rows": [], "columns": [], "cells": [[row, column]]}}
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_a_feature_id_in_a_token_table_opens_its_dashboard_in_the_same_tab(live_env):
    at = probed_in_app(analysis="live/sae_0")
    at.button(key="tok_2").click().run()
    by_activation = token_tables(at)[0]
    target = int(by_activation.feature.iloc[1])
    click_cell(at, "by_activation", 1, "feature")
    assert at.query_params["analysis"] == "live/sae_0" and at.query_params["feature"] == str(target)
    assert at.number_input(key="feature_id").value == target  # the Features page, on that dashboard
    assert any(md.value.startswith(f"**Feature {target}**") for md in at.markdown)


def test_each_members_matched_feature_is_shown_and_opens_that_members_dashboard(live_env, demo_model):
    matches = AnalysisFolder(live_env / "analyses" / "live" / "sae_0").read_table("matches")
    matches = matches[matches.other_analysis == "live/sae_1"].set_index("feature")
    at = probed_in_app(analysis="live/sae_0", token="4")
    assert at.session_state["probe_token"] == 4  # the URL's token is the one listed
    shown = token_tables(at)[0]
    assert shown["sae_1 match"].tolist() == matches.other_feature[shown.feature].tolist()
    np.testing.assert_allclose(shown["sae_1 cos"], matches.cosine[shown.feature], rtol=1e-6)
    sae_1 = load_dictionary(live_env / "runs" / "live" / "sae_1")
    member_codes = probe(demo_model, {"m": sae_1}, TEXT).codes["m"][4].toarray().ravel()
    np.testing.assert_allclose(shown["sae_1 act"], member_codes[shown["sae_1 match"]], atol=1e-5)
    target = int(shown["sae_1 match"].iloc[0])
    click_cell(at, "by_activation", 0, "sae_1 match")
    assert at.query_params["analysis"] == "live/sae_1" and at.query_params["feature"] == str(target)
    assert at.number_input(key="feature_id").value == target


def test_the_specific_features_ids_link_to_their_dashboards(live_env):
    at = probed_in_app(analysis="live/sae_0")
    shown = next(f.value for f in at.dataframe if "ratio" in f.value.columns)
    click_cell(at, "specific", 0, "ratio")  # any cell of a row opens the row's feature
    assert at.query_params["feature"] == str(int(shown.feature.iloc[0]))
    assert at.number_input(key="feature_id").value == int(shown.feature.iloc[0])


def test_a_link_outside_the_text_or_the_sae_is_a_note(live_env, demo_model):
    at = opened(analysis="live/sae_0", feature="4096", token="900")
    at.text_area(key="probe_text").input(TEXT)
    submit(at, "Probe")
    warnings = " ".join(w.value for w in at.warning)
    assert "Feature 4096 of the link is not one of this SAE's 128 features" in warnings
    assert "Token 900 of the link is not one of the text's" in warnings
    codes = probe(demo_model, {"s": load_dictionary(live_env / "runs" / "live" / "sae_0")}, TEXT).codes["s"]
    feature = int(codes.max(0).toarray().argmax())
    assert at.session_state["colour_feature"] == feature
    assert at.query_params["token"] == str(int(codes[:, feature].toarray().argmax()))  # where it peaks


def test_a_pasted_megabyte_is_bounded_work_with_a_note_and_a_strip_shown_in_parts(live_env):
    from app.ui.probe_view import STRIP_TOKENS

    at = opened(analysis="live/sae_0")
    at.text_area(key="probe_text").input("All the world's a stage, and all the men and women merely players. " * 15_000)
    submit(at, "Probe")
    notes = " ".join(i.value for i in at.info)
    assert "only the first 131,072 were tokenised" in notes and "read in" in notes and "windows" in notes
    strip = [b for b in at.button if b.key and b.key.startswith("tok_")]
    assert len(strip) == STRIP_TOKENS  # one part of the strip at a time, a chooser for the others
    part = at.selectbox(key="strip_part")
    part.set_value(len(part.options) - 1).run()
    last = sorted(int(b.key[4:]) for b in at.button if b.key and b.key.startswith("tok_"))
    assert last[-1] == 8191 and last[0] == (len(part.options) - 1) * STRIP_TOKENS


def test_token_labels_show_whitespace_and_escape_markdown():
    from app.ui.probe_view import strip_parts, token_label

    assert token_label(" *a*") == "\u00a0\\*a\\*" and token_label("\n") == "↵" and token_label("") == "∅"
    parts = strip_parts(600, 256)
    assert parts == [(0, 256), (256, 512), (512, 600)]


SITE = "blocks.0.hook_attn_out"


@pytest.fixture(scope="module")
def site_workspace(tmp_path_factory, demo_model):
    """A workspace whose only SAE is a one-member run at an attention output (a feature-circuit site SAE of the
    demo's kind): no ensemble, so no stored matching."""
    from interp.cache.writer import CacheConfig, build_cache
    from interp.features.dashboards import DashboardConfig
    from interp.pipeline import analyze_features
    from sae_training.config import TrainConfig
    from sae_training.trainer import train_saes

    root = tmp_path_factory.mktemp("site")
    cache = build_cache(CacheConfig(model="demo", hooks=(SITE,), n_tokens=2048, context_size=64, shard_tokens=2048),
                        root=root / "cached_activations", cache_id="site", device="cpu", progress=False,
                        model=demo_model)
    config = TrainConfig(cache=str(cache), hook=SITE, architecture="topk", d_sae=64, k=4, n_members=1,
                         n_tokens=512 * 4, batch_size=512, lr=4e-3, log_every=2, checkpoint_every=4,
                         eval_batches=1, eval_ce_batches=0, buffer_tokens=2048)
    train_saes(config, root / "runs" / "site", progress=False, model=demo_model)
    analyze_features(root / "runs" / "site", root / "analyses", cache_dir=cache, model_spec=demo_model,
                     config=DashboardConfig(n_top=5, cooccurrence=None), max_rows=2048)
    return root


def test_a_one_sae_site_run_probes_and_steers_at_its_own_hook(site_workspace, demo_model, monkeypatch):
    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(site_workspace))
    assert not AnalysisFolder(site_workspace / "analyses" / "site" / "sae_0").has("matches")
    at = opened(analysis="site/sae_0", feature="2")
    at.text_area(key="probe_text").input(TEXT)
    submit(at, "Probe")
    at.button(key="tok_3").click().run()
    assert not at.exception and not at.error
    sae = load_dictionary(site_workspace / "runs" / "site" / "sae_0")
    assert sae.hook_name == SITE
    expected = probe(demo_model, {"s": sae}, TEXT).token_features("s", 3, "activation", 20)
    shown = token_tables(at)[0]
    assert list(shown.columns) == ["feature", "label", "activation", "share", "logit_effect"]  # no member columns
    assert shown.feature.tolist() == expected.feature.tolist()
    at.text_input(key="steer_prompt").input("To be, or not to be")
    at.slider(key="n_tokens").set_value(5)
    submit(at, "Steer")
    out = generate(demo_model, "To be, or not to be", [steer(sae, SITE, 2, 8.0)], max_new_tokens=5, seed=0)
    assert [c.value for c in at.code] == ["To be, or not to be" + t for t in (out.default_text, out.steered_text)]
