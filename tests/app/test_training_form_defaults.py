"""The Training form's defaults follow the chosen cache's model, as ``workbench train``'s do (``fitted_defaults``):
its hook (of several, the middle residual stream) and 16 x that hook's width."""

from __future__ import annotations

import shutil
from pathlib import Path

from streamlit.testing.v1 import AppTest

PAGE = str(Path(__file__).resolve().parents[2] / "app" / "pages" / "1_Training.py")


def test_the_form_follows_the_chosen_cache(workspace, tmp_path, monkeypatch):
    from interp.cache.writer import CacheConfig, build_cache
    from interp.models.loading import demo_tokenizer, random_model

    root = tmp_path / "ws"
    shutil.copytree(workspace / "cached_activations", root / "cached_activations")  # "demo": 2 hooks, d_model 32
    wide = random_model({"n_layers": 4, "d_model": 48, "n_heads": 2, "d_head": 24, "d_mlp": 96, "d_vocab": 4096,
                         "n_ctx": 16, "act_fn": "gelu", "normalization_type": "LN"}, tokenizer=demo_tokenizer(),
                        device="cpu")
    build_cache(CacheConfig(model="demo", hooks=("blocks.2.hook_resid_post",), n_tokens=512, context_size=16,
                            shard_tokens=512), root=root / "cached_activations", cache_id="wide", device="cpu",
                progress=False, model=wide)
    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(root))
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    form = lambda: (at.text_input(key="cache_path").value, at.text_input(key="hook").value,  # noqa: E731
                    at.number_input(key="d_sae").value)
    # the first cache holds blocks.0 and blocks.1's residual streams: the middle one of two is blocks.1
    assert form() == ("cached_activations/demo", "blocks.1.hook_resid_post", 16 * 32)
    assert any("windows of 32" in c.value for c in at.caption)
    at.selectbox(key="cache_choice").select("wide").run()
    assert not at.exception, [e.value for e in at.exception]
    assert form() == ("cached_activations/wide", "blocks.2.hook_resid_post", 16 * 48)
    assert any("windows of 16" in c.value for c in at.caption)
