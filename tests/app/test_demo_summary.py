"""The demo's convergence figure: relative FVU improvement over the last fifth of the logged steps."""

from __future__ import annotations

import math

from app.commands.demo import last_fifth_improvement


def test_last_fifth_improvement_reads_the_logged_curve():
    rows = [{"step": step, "fvu": 1.0 / step} for step in range(10, 110, 10)]  # 0.1 at 100, 0.125 at 80
    assert math.isclose(last_fifth_improvement(rows), (0.125 - 0.1) / 0.125)
    flat = [{"step": step, "fvu": 0.2} for step in range(10, 110, 10)]
    assert last_fifth_improvement(flat) == 0.0
    assert math.isnan(last_fifth_improvement(rows[:3]))  # too short a curve to say
    assert math.isclose(last_fifth_improvement(rows + [{"step": 100, "mmcs": 0.5}]), 0.2)  # rows without FVU skipped


def test_the_demo_pairs_differ_in_seed_and_mfr_only_and_every_site_is_cached(tmp_path):
    """Different seeds, so Compare's cross-run match measures learned agreement, not a shared initialisation;
    the feature circuits' site SAEs read hooks the demo's one cache pass writes."""
    from dataclasses import asdict

    from app.commands.demo import DEMO_HOOKS, DEMO_SEEDS, demo_train_config
    from interp.pipeline.demo import DEMO_CIRCUIT_SITES, site_run_id

    mfr, plain = (asdict(demo_train_config(tmp_path, m, DEMO_SEEDS[run])) for run, m in (("demo-mfr", 1.0),
                                                                                             ("demo-plain", 0.0)))
    assert {k for k in mfr if mfr[k] != plain[k]} == {"seed", "mfr_coefficient"}
    assert set(DEMO_CIRCUIT_SITES) <= set(DEMO_HOOKS)
    assert site_run_id("blocks.1.hook_mlp_out") == "demo-site-L1-mlp_out"


def test_site_saes_take_their_shapes_and_an_earlier_demos_site_run_is_finished_as_made(tmp_path, monkeypatch):
    """Layer 0's sites (the IOI name signal) get the wider SAEs of DEMO_SITE_SHAPES; a site run an earlier demo
    started with another shape is resumed with its own saved config, not refused as a changed config."""
    from types import SimpleNamespace

    import sae_training.trainer
    from app.commands import demo
    from interp.store.names import DEMO_CIRCUIT_SITES, site_run_id

    old_hook = DEMO_CIRCUIT_SITES[0]
    old = demo.site_config(tmp_path, old_hook)
    old = type(old)(**{**old.__dict__, "d_sae": 512, "options": {"k": 16}})
    (tmp_path / "runs" / site_run_id(old_hook)).mkdir(parents=True)
    old.save(tmp_path / "runs" / site_run_id(old_hook) / "config.json")
    trained = {}

    def fake_train(config, folder, resume):
        trained[config.hook] = (config.d_sae, config.options.k, resume)
        return SimpleNamespace(evaluation={"members": [{"fvu": 0.1, "dead_fraction": 0.0}]})

    monkeypatch.setattr(sae_training.trainer, "train_saes", fake_train)
    summary = demo.train_sites_step(tmp_path)
    assert trained[old_hook] == (512, 16, True) and "kept as an earlier demo made it" in summary
    for hook in DEMO_CIRCUIT_SITES[1:]:
        assert trained[hook] == (*demo.DEMO_SITE_SHAPES[hook], False)
    assert {demo.DEMO_SITE_SHAPES[h] for h in DEMO_CIRCUIT_SITES if h.startswith("blocks.0")} == {(2048, 32)}
