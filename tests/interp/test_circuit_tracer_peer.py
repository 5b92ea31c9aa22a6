"""Our attribution graph against circuit-tracer's own (``circuit_tracer.attribute``, ``prune_graph``,
``compute_graph_scores``) on the same model and transcoders, offline. circuit-tracer pins transformers <= 4.57,
so it runs in a separate environment: set ``CIRCUIT_TRACER_PYTHON`` to the python of a venv holding
``circuit-tracer`` (``pip install torch`` first, then ``pip install circuit-tracer``). The model is the embedded
demo (its folder holds a HookedTransformerConfig, the weights and the tokenizer, which circuit-tracer's
TransformerLens replacement model reads); the transcoders are written in circuit-tracer's per-layer layout by
``Transcoder.circuit_tracer_tensors`` and read by its own ``load_transcoder_set``."""

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from interp.circuits.attribution import attribute
from interp.circuits.attribution.prune import graph_scores, prune_graph
from interp.features.transcoder import Transcoder
from interp.models.loading import DEMO_WEIGHTS, load_model

PEER = Path(__file__).with_name("circuit_tracer_peer.py")
PROMPT = "When Romeo and Juliet went to the court, Romeo gave a ring to"


def demo_transcoders(activation: str, skip: bool, hook_in: str = "ln2.hook_normalized") -> list[Transcoder]:
    g = torch.Generator().manual_seed(1)
    return [Transcoder(torch.randn(128, 256, generator=g) / 11, 0.1 * torch.randn(256, generator=g) - 0.2,
                       torch.randn(256, 128, generator=g) / 16, 0.1 * torch.randn(128, generator=g), activation,
                       torch.full((256,), 0.05) if activation == "jumprelu" else None, None,
                       0.1 * torch.randn(128, 128, generator=g) if skip else None,
                       f"blocks.{layer}.{hook_in}", f"blocks.{layer}.hook_mlp_out") for layer in range(2)]


def before_ln_affine(tc: Transcoder, w: Tensor, b: Tensor) -> Transcoder:
    """A transcoder reading the MLP's input ``y = n·w + b`` (circuit-tracer's ``mlp.hook_in``, after ln2's affine)
    as the same function of ``n`` (``ln2.hook_normalized``, which TransformerLens hooks before the affine):
    ``W_enc ← diag(w) W_enc``, ``b_enc ← b_enc + b W_enc``, ``W_skip ← W_skip diag(w)``,
    ``b_dec ← b_dec + W_skip b``."""
    skip_bias = tc.W_skip @ b if tc.W_skip is not None else 0
    return Transcoder(w[:, None] * tc.W_enc, tc.b_enc + b @ tc.W_enc, tc.W_dec, tc.b_dec + skip_bias, tc.activation,
                      tc.threshold, tc.k, None if tc.W_skip is None else tc.W_skip * w[None, :],
                      tc.hook_in.replace("mlp.hook_in", "ln2.hook_normalized"), tc.hook_out)


def run_peer(tmp_path: Path, transcoders: list[Transcoder], tokens: list[int],
             max_feature_nodes: int | None = None) -> tuple[dict, dict]:
    paths = []
    for layer, tc in enumerate(transcoders):
        paths.append(tmp_path / f"layer_{layer}.safetensors")
        save_file(tc.circuit_tracer_tensors(), str(paths[-1]))
    (tmp_path / "tokens.json").write_text(json.dumps(tokens))
    input_hook = transcoders[0].hook_in.split(".", 2)[2]  # relative to the block, as circuit-tracer names it
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PEER_MAX_FEATURE_NODES": "" if max_feature_nodes is None else str(max_feature_nodes)}
    done = subprocess.run([os.environ["CIRCUIT_TRACER_PYTHON"], str(PEER), str(DEMO_WEIGHTS), str(tmp_path / "peer"),
                           str(tmp_path / "tokens.json"), input_hook, *map(str, paths)], capture_output=True,
                          text=True, timeout=1200, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return load_file(str(tmp_path / "peer.safetensors")), json.loads((tmp_path / "peer.json").read_text())


def test_before_ln_affine_is_the_same_function():
    """The fold the peer test relies on: the folded transcoder on ``n`` is the original on ``n·w + b``."""
    g = torch.Generator().manual_seed(2)
    n, w, b = torch.randn(7, 128, generator=g), torch.rand(128, generator=g) + 0.5, torch.randn(128, generator=g)
    for activation, skip in (("relu", True), ("jumprelu", False)):
        tc = demo_transcoders(activation, skip, "mlp.hook_in")[0]
        folded = before_ln_affine(tc, w, b)
        assert folded.hook_in == "blocks.0.ln2.hook_normalized"
        torch.testing.assert_close(folded.encode(n), tc.encode(n * w + b), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(folded(n), tc(n * w + b), atol=1e-5, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("CIRCUIT_TRACER_PYTHON"),
                    reason="set CIRCUIT_TRACER_PYTHON to a venv with circuit-tracer")
@pytest.mark.parametrize("activation,skip", [("relu", True), ("jumprelu", False)])
@pytest.mark.parametrize("where", ["same hook", "mlp input"])
def test_our_adjacency_is_circuit_tracers(tmp_path, activation, skip, where):
    """``same hook``: both sides' transcoders read ``ln2.hook_normalized``. ``mlp input``: circuit-tracer's read
    its ``mlp.hook_in`` (after ln2's affine, a hook TransformerLens lacks) and ours are the same transcoders with
    the affine folded in, at ``ln2.hook_normalized``."""
    model = load_model("demo", device="cpu")
    tokens = model.to_tokens(PROMPT)[0].tolist()
    if where == "same hook":
        theirs, scores = run_peer(tmp_path, demo_transcoders(activation, skip), tokens)
        transcoders = demo_transcoders(activation, skip)
    else:
        theirs, scores = run_peer(tmp_path, demo_transcoders(activation, skip, "mlp.hook_in"), tokens)
        transcoders = [before_ln_affine(tc, model.blocks[layer].ln2.w.detach(), model.blocks[layer].ln2.b.detach())
                       for layer, tc in enumerate(demo_transcoders(activation, skip, "mlp.hook_in"))]
    graph = attribute(model, transcoders, tokens)
    assert graph.n_features > 100
    torch.testing.assert_close(graph.active_features, theirs["active_features"])  # same nodes, same order
    torch.testing.assert_close(graph.activations, theirs["activation_values"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(graph.logit_tokens, theirs["logit_targets"])
    scale = float(graph.adjacency.abs().max())
    torch.testing.assert_close(graph.adjacency, theirs["adjacency"], atol=1e-4 * scale, rtol=0)
    replacement, completeness = graph_scores(graph)
    assert replacement == pytest.approx(scores["replacement_score"], abs=1e-4)
    assert completeness == pytest.approx(scores["completeness_score"], abs=1e-4)
    pruned = prune_graph(graph)
    assert torch.equal(pruned.node_mask, theirs["node_mask"])
    agree = (pruned.edge_mask == theirs["edge_mask"]).float().mean()
    assert agree > 0.9999


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("CIRCUIT_TRACER_PYTHON"),
                    reason="set CIRCUIT_TRACER_PYTHON to a venv with circuit-tracer")
def test_a_capped_graph_keeps_the_features_circuit_tracer_keeps(tmp_path):
    """``max_feature_nodes`` with the same batch (16) and update interval (4): the same features are chosen by
    the partial influences, and the capped adjacency over them is circuit-tracer's."""
    model = load_model("demo", device="cpu")
    tokens = model.to_tokens(PROMPT)[0].tolist()
    theirs, scores = run_peer(tmp_path, demo_transcoders("relu", True), tokens, max_feature_nodes=200)
    graph = attribute(model, demo_transcoders("relu", True), tokens, batch_size=16, max_feature_nodes=200,
                      update_interval=4)
    assert graph.n_features == 200 and len(theirs["selected_features"]) == 200
    assert graph.n_active_features == len(theirs["active_features"]) > 2000
    torch.testing.assert_close(graph.active_features, theirs["active_features"][theirs["selected_features"]])
    scale = float(graph.adjacency.abs().max())
    torch.testing.assert_close(graph.adjacency, theirs["adjacency"], atol=1e-4 * scale, rtol=0)
    replacement, completeness = graph_scores(graph)
    assert replacement == pytest.approx(scores["replacement_score"], abs=1e-4)
    assert completeness == pytest.approx(scores["completeness_score"], abs=1e-4)
