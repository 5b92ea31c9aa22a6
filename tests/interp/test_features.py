"""Feature dashboards on synthetic data with features planted on known tokens."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest
import torch

from interp.cache.store import TokenChunk
from interp.features.dashboards import (
    DashboardConfig,
    dashboard_tables,
    feature_dashboards,
)
from interp.features.dictionary import DictionaryError, ReluDictionary, as_dictionary
from interp.features.feature_weights import nearest_features
from interp.features.matching import match_features, match_per_row, matched_features_table
from interp.store.io import write_tables

D_IN, D_SAE, VOCAB, SEQ = 16, 6, 64, 32
TRIGGER = {f: 10 + f for f in range(D_SAE)}  # feature f fires on token 10 + f
PROMOTED = {f: 40 + f for f in range(D_SAE)}  # and its decoder promotes token 40 + f


def PlantedDictionary(W_dec: torch.Tensor) -> ReluDictionary:
    """ReLU dictionary whose features are the rows of ``W_dec`` (encoder = decoderᵀ, threshold 0.5)."""
    return ReluDictionary(W_dec.T, torch.full((W_dec.shape[0],), -0.5), W_dec)


def planted_stream(n_seq: int = 40, seed: int = 0, chunk_seqs: int = 3):
    """Random tokens; a trigger token adds its feature's direction with a random strength in [1, 3]."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, VOCAB, (n_seq, SEQ), generator=g)
    tokens[:, 0] = 0  # BOS
    acts = 0.05 * torch.randn(n_seq, SEQ, D_IN, generator=g)
    strength = 1 + 2 * torch.rand(n_seq, SEQ, generator=g)
    for f, token in TRIGGER.items():
        acts[..., f] += (tokens == token) * strength
    acts[:, 0] += 10.0  # a huge BOS activation the dashboards must ignore
    chunks = []
    for start in range(0, n_seq, chunk_seqs):
        t = tokens[start:start + chunk_seqs]
        b = t.shape[0]
        chunks.append(TokenChunk(acts[start:start + chunk_seqs].reshape(b * SEQ, D_IN), t.reshape(-1),
                                 torch.arange(start, start + b).repeat_interleave(SEQ), torch.arange(SEQ).repeat(b)))
    return chunks


def planted_unembed(seed: int = 1) -> torch.Tensor:
    W_U = 0.1 * torch.randn(D_IN, VOCAB, generator=torch.Generator().manual_seed(seed))
    for f, token in PROMOTED.items():
        W_U[f, token] += 3.0
        W_U[f, token + 10] -= 3.0  # and demotes token 50 + f
    return W_U


def decode(token: int) -> str:
    return f"t{token}"


@pytest.fixture(scope="module")
def planted():
    dictionary = PlantedDictionary(torch.eye(D_IN)[:D_SAE].contiguous())
    config = DashboardConfig(n_top=5, n_bands=2, n_per_band=3, left=3, right=2, n_logits=3)
    data = feature_dashboards(dictionary, planted_stream(), config)
    return dictionary, data, dashboard_tables(data, dictionary.W_dec, decode, W_U=planted_unembed())


def test_top_contexts_show_the_planted_token(planted):
    _, data, tables = planted
    top = tables["examples"].query("kind == 'top'")
    assert len(top) == D_SAE * 5
    for f, token in TRIGGER.items():
        rows = top[top.feature == f]
        assert (rows.token_id == token).all()
        assert all(ids[c] == token and acts[c] == max(acts)
                   for ids, acts, c in zip(rows.context_ids, rows.context_acts, rows.center))
        assert tables["features"].label[f].split(" · ")[0] == f"t{token}"


def test_logit_effects_show_the_promoted_and_demoted_tokens(planted):
    _, _, tables = planted
    logits = tables["logits"]
    for f, token in PROMOTED.items():
        best = logits.query("feature == @f and rank == 0").set_index("sign").token_id
        assert best["positive"] == token and best["negative"] == token + 10
        assert tables["features"].top_logit_tokens[f][0] == f"t{token}"


def test_streaming_matches_a_whole_pass(planted):
    dictionary, data, tables = planted
    chunks = planted_stream()
    x = torch.cat([c.activations for c in chunks])
    position = torch.cat([c.position for c in chunks])
    f = dictionary.encode(x) * (position != 0)[:, None]
    assert data.n_tokens == int((position != 0).sum())
    assert torch.equal(data.fires, (f > 0).sum(0))
    assert torch.allclose(data.act_max, f.max(0).values)
    assert torch.allclose(data.top.value, f.topk(5, dim=0).values)
    assert torch.equal(data.histogram.sum(1), data.fires)  # every firing lands in one bin
    freq = tables["features"].frequency.to_numpy()
    assert np.allclose(freq, ((f > 0).float().mean(0) * len(f) / data.n_tokens).numpy())


def test_quantile_examples_are_firing_tokens_ordered_by_band(planted):
    _, _, tables = planted
    sampled = tables["examples"].query("kind == 'quantile'")
    assert (sampled.activation > 0).all()
    for f, token in TRIGGER.items():
        rows = sampled[sampled.feature == f].sort_values("activation")
        assert (rows.token_id == token).all()
        assert rows.band.is_monotonic_increasing and set(rows.band) == {0, 1}


def test_window_cooccurrence_counts_windows(planted):
    _, data, tables = planted
    window = DashboardConfig().cooccurrence_window
    tokens = torch.cat([c.token_ids for c in planted_stream()]).reshape(-1, SEQ)
    tokens[:, 0] = -1  # BOS never counts
    windows = tokens.reshape(tokens.shape[0], SEQ // window, window)
    has = torch.stack([(windows == TRIGGER[f]).any(-1) for f in range(D_SAE)], -1)  # [seq, window, feature]
    assert data.n_blocks == tokens.shape[0] * (SEQ // window)
    table = tables["cooccurrence"].set_index(["feature", "other"])["count"]
    expected = {(a, b): int((has[..., a] & has[..., b]).sum()) for a in range(D_SAE) for b in range(D_SAE) if a != b}
    assert any(expected.values())
    assert {pair: int(table.get(pair, 0)) for pair in expected} == expected  # a pair never co-firing has no row


def test_sequence_cooccurrence_counts_sequences():
    dictionary = PlantedDictionary(torch.eye(D_IN)[:D_SAE].contiguous())
    data = feature_dashboards(dictionary, planted_stream(), DashboardConfig(n_top=3, cooccurrence="sequence"))
    tables = dashboard_tables(data, dictionary.W_dec, decode)
    tokens = torch.cat([c.token_ids for c in planted_stream()]).reshape(-1, SEQ)[:, 1:]
    has = torch.stack([(tokens == TRIGGER[f]).any(1) for f in range(D_SAE)], 1)
    row = tables["cooccurrence"].query("feature == 0 and other == 1")
    assert data.n_blocks == tokens.shape[0]
    assert int(row["count"].iloc[0]) == int((has[:, 0] & has[:, 1]).sum())


def test_a_pair_that_always_fires_together_ranks_first_and_one_that_never_does_last():
    """Features 0 and 1 fire on the same trigger token; feature 2 fires only where 0 cannot; the rest
    fire at random. Feature 0's table must list 1 first and 2 last (or not at all: never co-fired)."""
    g = torch.Generator().manual_seed(3)
    n_seq = 60
    tokens = torch.randint(20, VOCAB, (n_seq, SEQ), generator=g)
    tokens[:, 0] = 0
    together = torch.rand(n_seq, SEQ, generator=g) < 0.04
    tokens[together] = 10
    tokens[:, 0] = 0
    acts = 0.05 * torch.randn(n_seq, SEQ, D_IN, generator=g)
    acts[..., 0] += (tokens == 10) * 2.0
    acts[..., 1] += (tokens == 10) * 2.0
    windows_with_0 = (tokens == 10).reshape(n_seq, SEQ // 4, 4).any(-1).repeat_interleave(4, dim=1)
    apart = (torch.rand(n_seq, SEQ, generator=g) < 0.04) & ~windows_with_0
    acts[..., 2] += apart * 2.0
    for f in range(3, D_SAE):
        acts[..., f] += (torch.rand(n_seq, SEQ, generator=g) < 0.05) * 2.0
    chunk = TokenChunk(acts.reshape(-1, D_IN), tokens.reshape(-1), torch.arange(n_seq).repeat_interleave(SEQ),
                       torch.arange(SEQ).repeat(n_seq))
    dictionary = PlantedDictionary(torch.eye(D_IN)[:D_SAE].contiguous())
    data = feature_dashboards(dictionary, [chunk], DashboardConfig(n_top=3, cooccurrence_window=4))
    table = dashboard_tables(data, dictionary.W_dec, decode)["cooccurrence"]
    mine = table[table.feature == 0].sort_values("rank")
    assert mine.other.iloc[0] == 1 and mine.phi.iloc[0] > 0.99
    assert 2 not in set(mine.other) or mine.other.iloc[-1] == 2
    assert mine.phi.nunique() == len(mine)  # not a flat table


def test_dense_host_and_spilled_cooccurrence_counts_agree_and_pruning_keeps_each_top_k():
    from interp.features.cooccurrence import cooccurrence_table, prune_counts

    dictionary = PlantedDictionary(torch.eye(D_IN)[:D_SAE].contiguous())
    dense = feature_dashboards(dictionary, planted_stream(), DashboardConfig(n_top=3))
    host = feature_dashboards(dictionary, planted_stream(), DashboardConfig(n_top=3, dense_cooccurrence_max=0))
    spilled = feature_dashboards(dictionary, planted_stream(), DashboardConfig(n_top=3, dense_cooccurrence_max=0,
                                                                               host_cooccurrence_max=0))
    assert dense.n_blocks == host.n_blocks == spilled.n_blocks
    np.testing.assert_array_equal(dense.cooccurrence.toarray(), spilled.cooccurrence.toarray())
    np.testing.assert_array_equal(host.cooccurrence.toarray(), spilled.cooccurrence.toarray())
    # 6 features: nothing pruned by default. Pruned to the full pairs among the 2 most frequent, the 2 top
    # others of each feature and the diagonal, each feature's top 2 is unchanged
    full = torch.from_numpy(spilled.cooccurrence.toarray())
    pruned = prune_counts(full, dense.n_blocks, keep_all=2, keep_top=2)
    assert pruned.nnz < (full > 0).sum()
    np.testing.assert_array_equal(pruned.diagonal(), full.diagonal().numpy())
    fires = full.diagonal().numpy()
    exact, kept = (cooccurrence_table(m, fires, dense.n_blocks, k=2) for m in (spilled.cooccurrence, pruned))
    pd.testing.assert_frame_equal(exact[["feature", "other", "phi"]], kept[["feature", "other", "phi"]])  # same top 2
    frequent = np.argsort(-fires, kind="stable")[:2]
    sub = pruned.toarray()[np.ix_(frequent, frequent)]
    np.testing.assert_array_equal(sub, full.numpy()[np.ix_(frequent, frequent)])


def reference_counts(dictionary, chunks, unit: str, window: int = 4) -> tuple[torch.Tensor, int]:
    """Full dense co-firing counts over the whole stream at once (BOS excluded), and the number of blocks."""
    x = torch.cat([c.activations for c in chunks])
    sequence, position = torch.cat([c.sequence for c in chunks]), torch.cat([c.position for c in chunks])
    fired = (dictionary.encode(x) > 0) & (position != 0)[:, None]
    key = {"token": torch.arange(len(x)), "window": sequence * SEQ + position // window, "sequence": sequence}[unit]
    _, block = torch.unique(key, return_inverse=True)
    rows, feats = fired.nonzero(as_tuple=True)
    indicator = torch.zeros(int(block.max()) + 1, fired.shape[1])
    indicator[block[rows], feats] = 1.0
    return indicator.T @ indicator, indicator.shape[0]


@pytest.mark.parametrize("unit", ["token", "window", "sequence"])
def test_spilled_host_and_dense_counts_equal_pruning_the_full_counts(unit):
    """A random dictionary of 40 features over the planted stream (correlated firing, ties in phi): every
    mode, and spilled passes of 3 rows (40 = 13 x 3 + 1) or of all rows, keeps exactly what pruning the
    full dense counts keeps."""
    from interp.features.cooccurrence import prune_counts

    d_sae = 40
    dictionary = PlantedDictionary(torch.randn(d_sae, D_IN, generator=torch.Generator().manual_seed(5)))
    full, n_blocks = reference_counts(dictionary, planted_stream(), unit)
    assert (full > 0).float().mean() > 0.3  # enough co-firing for the pruning to choose
    expected = prune_counts(full, n_blocks, keep_all=8, keep_top=2).toarray()
    assert 0 < (expected > 0).sum() < (full > 0).sum()  # something pruned, something kept
    frequent = np.argsort(-full.diagonal().numpy(), kind="stable")[:8]
    np.testing.assert_array_equal(expected[np.ix_(frequent, frequent)], full.numpy()[np.ix_(frequent, frequent)])
    assert ((expected > 0).sum(1) >= np.minimum(3, (full > 0).sum(1).numpy())).all()  # each row's top 2 and itself
    base = DashboardConfig(n_top=3, cooccurrence=unit, keep_all_pairs=8, keep_top_others=2)
    modes = {"dense": {}, "host": {"dense_cooccurrence_max": 0},
             "spill, 3 rows a pass": {"dense_cooccurrence_max": 0, "host_cooccurrence_max": 0,
                                      "cooccurrence_pass_bytes": 3 * 4 * d_sae},
             "spill, one pass": {"dense_cooccurrence_max": 0, "host_cooccurrence_max": 0}}
    for mode, fields in modes.items():
        data = feature_dashboards(dictionary, planted_stream(), DashboardConfig(**{**vars(base), **fields}))
        assert data.n_blocks == n_blocks, mode
        np.testing.assert_array_equal(data.cooccurrence.toarray(), expected, err_msg=mode)


def test_the_spill_file_exists_while_streaming_and_is_removed_after_the_result_and_after_an_error(
        tmp_path, monkeypatch, capsys):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dictionary = PlantedDictionary(torch.eye(D_IN)[:D_SAE].contiguous())
    config = DashboardConfig(n_top=3, dense_cooccurrence_max=0, host_cooccurrence_max=0)
    seen = []

    def watched(fail: bool):
        for i, chunk in enumerate(planted_stream()):
            seen.append([p.name for p in tmp_path.iterdir()])
            if fail and i == 3:
                raise KeyboardInterrupt
            yield chunk

    data = feature_dashboards(dictionary, watched(fail=False), config, progress=True)
    assert seen[0] == [] and len(seen[1]) == 1 and seen[1][0].startswith("cooccurrence-")  # made by the first chunk
    assert list(tmp_path.iterdir()) == [] and data.cooccurrence.nnz > 0
    assert "co-occurrence (spill)" in capsys.readouterr().err  # the progress bar over the passes
    with pytest.raises(KeyboardInterrupt):
        feature_dashboards(dictionary, watched(fail=True), config)
    assert len(seen[-1]) == 1 and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fields, names", [
    ({"dense_cooccurrence_max": 0}, "host_cooccurrence_max"),
    ({"dense_cooccurrence_max": 0, "host_cooccurrence_max": 0}, "cooccurrence_pass_bytes"),
])
def test_counts_that_do_not_fit_in_memory_raise_an_error_saying_what_to_set(monkeypatch, fields, names):
    from interp.features.cooccurrence import CooccurrenceMemoryError
    from interp.store.errors import InputError

    zeros = torch.zeros

    def failing(*shape, **kwargs):  # torch's failed CPU allocation, for the int32 count matrices only
        if kwargs.get("dtype") == torch.int32 and len(shape) == 2:
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: not enough memory")
        return zeros(*shape, **kwargs)

    monkeypatch.setattr(torch, "zeros", failing)
    dictionary = PlantedDictionary(torch.eye(D_IN)[:D_SAE].contiguous())
    with pytest.raises(CooccurrenceMemoryError, match=f"GB .*{names}.*cooccurrence=None") as error:
        feature_dashboards(dictionary, planted_stream(), DashboardConfig(n_top=3, **fields))
    assert isinstance(error.value, InputError) and "\n" not in str(error.value)


def test_phi_order_is_phi_times_a_positive_constant_per_row_and_leaves_its_input_alone():
    from interp.features.cooccurrence import phi_order

    gen = torch.Generator().manual_seed(1)
    n_blocks, fires = 500, torch.randint(20, 300, (12,), generator=gen).double()
    counts = torch.minimum(torch.randint(0, 40, (12, 12), generator=gen).double(), fires[:, None])
    before = counts.clone()
    n1, m1, n11 = fires[:, None].numpy(), fires[None, :].numpy(), counts.numpy()
    phi = (n11 * n_blocks - n1 * m1) / np.sqrt(n1 * (n_blocks - n1) * m1 * (n_blocks - m1))
    scaled = phi_order(counts, fires, fires, n_blocks).numpy() / np.sqrt(n1 * (n_blocks - n1))
    np.testing.assert_allclose(scaled, phi, rtol=1e-12)
    assert torch.equal(counts, before)


def test_pruning_a_row_block_at_a_time_keeps_what_pruning_it_whole_keeps():
    from interp.features.cooccurrence import prune_counts

    gen = torch.Generator().manual_seed(0)
    fires = torch.randint(50, 400, (37,), generator=gen)
    counts = torch.minimum(torch.randint(0, 60, (37, 37), generator=gen), fires[:, None]).float()
    counts = torch.minimum(counts, counts.T)
    counts.fill_diagonal_(0)
    counts += torch.diag(fires.float())
    whole = prune_counts(counts, 1000, keep_all=5, keep_top=4, block=10_000)
    for block in (1, 7):
        np.testing.assert_array_equal(prune_counts(counts, 1000, keep_all=5, keep_top=4, block=block).toarray(),
                                      whole.toarray())
        np.testing.assert_array_equal(prune_counts(counts.to(torch.int32), 1000, 5, 4, block=block).toarray(),
                                      whole.toarray())  # the host counter's int32 counts


def test_saelens_sae_gives_the_same_dashboards(planted):
    from sae_lens import StandardSAE, StandardSAEConfig

    dictionary, data, _ = planted
    sae = StandardSAE(StandardSAEConfig(d_in=D_IN, d_sae=D_SAE, apply_b_dec_to_input=False))
    with torch.no_grad():
        sae.W_enc.copy_(dictionary.W_dec.T)
        sae.W_dec.copy_(dictionary.W_dec)
        sae.b_enc.fill_(-0.5)
        sae.b_dec.zero_()
    config = DashboardConfig(n_top=5, n_bands=2, n_per_band=3, left=3, right=2)
    other = feature_dashboards(as_dictionary(sae), planted_stream(), config)
    assert torch.equal(other.fires, data.fires)
    assert torch.allclose(other.top.value, data.top.value)


def test_written_tables_answer_duckdb(planted, tmp_path):
    _, _, tables = planted
    write_tables(tables, tmp_path)
    n = duckdb.connect().execute(f"select count(*) from '{tmp_path / 'features.parquet'}'").fetchall()[0][0]
    assert n == D_SAE


def test_nearest_and_matched_features_recover_a_permutation():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(20, 8, generator=g)
    perm = torch.randperm(20, generator=g)
    W_b = W[perm] + 0.01 * torch.randn(20, 8, generator=g)
    match, score = match_per_row(match_features(W_b, W), 20)
    assert np.array_equal(match, perm.numpy()) and score.min() > 0.99
    W_near = torch.cat([W, W[:1] * 2 + 1e-3])  # feature 20 points along feature 0
    _, ids = nearest_features(W_near, 1)
    assert ids[0, 0] == 20 and ids[20, 0] == 0
    table = matched_features_table([W, W_b])
    assert set(table.member) == {0, 1} and (table.query("member == 1").other_feature.to_numpy() == perm.numpy()).all()


def test_bad_input_raises_clear_errors():
    dictionary = PlantedDictionary(torch.eye(8)[:D_SAE].contiguous())
    with pytest.raises(DictionaryError, match="d_in=8"):
        feature_dashboards(dictionary, planted_stream())
    with pytest.raises(DictionaryError, match="no tokens"):
        feature_dashboards(dictionary, [])


def test_a_relu_dictionary_from_weights_encodes_decodes_and_refuses_weights_that_do_not_fit():
    W_dec = torch.eye(D_IN)[:D_SAE]
    dictionary = ReluDictionary(W_dec.T, torch.full((D_SAE,), -0.5), W_dec)
    x = torch.zeros(2, D_IN)
    x[0, 1], x[1, 3] = 2.0, 0.4  # above and below the threshold
    codes = dictionary.encode(x)
    assert codes[0, 1] == pytest.approx(1.5) and codes.count_nonzero() == 1
    assert torch.equal(dictionary.decode(codes)[0], 1.5 * W_dec[1]) and (dictionary.d_in, dictionary.d_sae) == (16, 6)
    with pytest.raises(DictionaryError, match="do not fit"):
        ReluDictionary(W_dec.T, torch.zeros(D_SAE + 1), W_dec)


def write_sae(folder, d_in, d_sae, hook, seed):
    from sae_lens import StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    torch.manual_seed(seed)
    sae = StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=d_sae, metadata=SAEMetadata(hook_name=hook)))
    with torch.no_grad():
        sae.W_dec.copy_(torch.randn(d_sae, d_in))
        sae.W_enc.copy_(sae.W_dec.T)
    sae.save_model(str(folder))


@pytest.mark.slow
def test_cli_analyzes_a_run_end_to_end(tmp_path, tiny_model):
    import json

    from typer.testing import CliRunner

    from app.cli import app
    from interp.cache.store import model_chunks
    from interp.cache.writer import CacheConfig, build_cache
    from interp.features.dictionary import load_dictionary
    from interp.pipeline import analyze_features
    from interp.store.tables import feature_dashboard, matched_features

    hook = "blocks.1.hook_resid_post"
    cache = build_cache(CacheConfig(model="tiny", hooks=(hook,), n_tokens=2048, context_size=32, shard_tokens=1024),
                        root=tmp_path / "cached_activations", cache_id="tiny", progress=False, model=tiny_model)
    run = tmp_path / "runs" / "r1"
    for i in range(2):
        write_sae(run / f"sae_{i}", 32, 24, hook, seed=i)
    (run / "config.json").write_text(json.dumps({"cache": str(cache)}))
    folders = analyze_features(run, tmp_path / "analyses", model_spec=tiny_model)
    assert [f.path.relative_to(tmp_path / "analyses").as_posix() for f in folders] == ["r1/sae_0", "r1/sae_1"]
    rows = feature_dashboard(folders[0], 3)
    top = rows["examples"].query("kind == 'top'")
    assert len(top) > 0 and (top.position > 0).all() and len(rows["logits"]) == 20
    assert matched_features(folders[0], 3).other_analysis.tolist() == ["r1/sae_1"]
    runner = CliRunner()
    result = runner.invoke(app, ["analyze", "geometry", str(run), "--out", str(tmp_path / "analyses"),
                                 "--clusters", "3", "--no-umap"])
    assert result.exit_code == 0, result.output
    assert folders[1].has("geometry_lobes") and folders[1].present() == ["dashboards", "geometry", "matches"]
    assert sorted(folders[1].read_table("geometry_lobe_labels").lobe.unique()) == [0, 1, 2]  # at --clusters 3
    from interp.pipeline import analyze_eval

    summary = analyze_eval(run, tmp_path / "analyses", model_spec=tiny_model, n_prompts=32).read_table("eval_summary")
    assert list(summary.dictionary) == ["supervised", "r1/sae_0", "r1/sae_1"]
    live = feature_dashboards(load_dictionary(run / "sae_0"), model_chunks(tiny_model, hook, n_tokens=256,
                                                                           context_size=32))
    assert live.n_tokens == 8 * 31  # BOS excluded
    write_sae(tmp_path / "runs" / "bad" / "sae_0", 16, 8, hook, seed=0)
    result = runner.invoke(app, ["analyze", "features", str(tmp_path / "runs" / "bad" / "sae_0"),
                                 "--cache", str(cache), "--out", str(tmp_path / "analyses"), "--no-logits"])
    assert result.exit_code == 2 and "d_in=16" in result.output
