"""A small complete workspace (cache, MFR run, dashboards, geometry, circuits) built through the real APIs.

It uses the tiny random model of ``tests/conftest.py`` so it takes seconds; the files have exactly the
layout ``workbench demo`` writes. ``tests/conftest.py`` builds it once per session (fixture ``workspace``).
"""

from __future__ import annotations

from pathlib import Path

HOOK = "blocks.1.hook_resid_post"


def build_workspace(root: Path, model) -> Path:
    """Write ``cached_activations/demo``, ``runs/demo-mfr``, ``analyses/demo-mfr`` and ``analyses/circuits/demo``."""
    from interp.cache.writer import CacheConfig, build_cache
    from interp.circuits.prompts import induction_prompts
    from interp.features.dashboards import DashboardConfig
    from interp.pipeline import analyze_circuits, analyze_features, analyze_geometry
    from sae_training.config import TrainConfig
    from sae_training.trainer import train_saes

    root.mkdir(parents=True, exist_ok=True)
    cache = build_cache(CacheConfig(model="demo", hooks=("blocks.0.hook_resid_post", HOOK), n_tokens=4096,
                                    context_size=32, shard_tokens=2048),
                        root=root / "cached_activations", cache_id="demo", device="cpu", progress=False, model=model)
    config = TrainConfig(cache=str(cache), hook=HOOK, architecture="topk", d_sae=64, k=4, n_members=2,
                         mfr_coefficient=1.0, mfr_warmup_steps=2, n_tokens=256 * 12, batch_size=256, lr=1e-3,
                         log_every=2, checkpoint_every=6, eval_batches=2, eval_ce_batches=0, buffer_tokens=2048)
    train_saes(config, root / "runs" / "demo-mfr", progress=False, model=model)
    run = root / "runs" / "demo-mfr"
    analyze_features(run, root / "analyses", cache_dir=cache, model_spec=model,
                     config=DashboardConfig(n_top=5), max_rows=2048)
    analyze_geometry(run, root / "analyses", n_clusters=3, max_features=64, with_umap=False)
    prompts = induction_prompts(model, 4, 8)
    analyze_circuits(model, prompts.clean, prompts.corrupt, prompts.metric(), prompts.second_copy,
                     root / "analyses" / "circuits" / "demo", sae_folder=run / "sae_0", sae_hook=HOOK,
                     over_positions=True, node_threshold=0.0)  # a random model's effects are small: keep every node
    return root


def build_live_workspace(root: Path, model) -> Path:
    """``cached_activations/demo`` and ``runs/live`` (two TopK SAEs at layer 1) with dashboards, on the demo
    model (``model``: the loaded demo model), so its spec ``demo`` reloads the same model."""
    from interp.cache.writer import CacheConfig, build_cache
    from interp.features.dashboards import DashboardConfig
    from interp.pipeline import analyze_features
    from sae_training.config import TrainConfig
    from sae_training.trainer import train_saes

    cache = build_cache(CacheConfig(model="demo", hooks=(HOOK,), n_tokens=4096, context_size=64, shard_tokens=4096),
                        root=root / "cached_activations", cache_id="demo", device="cpu", progress=False, model=model)
    config = TrainConfig(cache=str(cache), hook=HOOK, architecture="topk", d_sae=128, k=8, n_members=2,
                         mfr_coefficient=1.0, mfr_warmup_steps=2, n_tokens=512 * 8, batch_size=512, lr=4e-3,
                         log_every=4, checkpoint_every=8, eval_batches=1, eval_ce_batches=0, buffer_tokens=4096)
    train_saes(config, root / "runs" / "live", progress=False, model=model)
    analyze_features(root / "runs" / "live", root / "analyses", cache_dir=cache, model_spec=model,
                     config=DashboardConfig(n_top=5, cooccurrence=None), max_rows=4096)
    return root
