"""Run by ``test_circuit_tracer_peer.py`` with the python of a separate virtual environment holding circuit-tracer
(it pins transformers <= 4.57): circuit-tracer's own replacement model, transcoder loader, ``attribute``,
``prune_graph`` and ``compute_graph_scores`` on a model folder (``config.json``: a HookedTransformerConfig,
``model.safetensors``, a tokenizer) and per-layer transcoder files in its layout, offline. INPUT_HOOK is where the
transcoders read, relative to a block (``mlp.hook_in``: circuit-tracer's wrapper on the MLP's input, after ln2's
affine; ``ln2.hook_normalized``: before it). Writes the graph's tensors (safetensors) and scores (JSON) next to the
given output stem. ``PEER_MAX_FEATURE_NODES`` (environment) caps the feature nodes as circuit-tracer's
``max_feature_nodes`` (update interval 4); ``PEER_BATCH_SIZE`` is its batch (16). The JSON also holds the seconds
``attribute`` took and the growth of the process's peak resident memory over it.

    python circuit_tracer_peer.py MODEL_DIR OUT_STEM TOKENS_JSON INPUT_HOOK LAYER0.safetensors LAYER1.safetensors ...
"""

import json
import os
import resource
import sys
import time

import torch
from circuit_tracer import attribute
from circuit_tracer.graph import compute_graph_scores, prune_graph
from circuit_tracer.replacement_model.replacement_model_transformerlens import TransformerLensReplacementModel
from circuit_tracer.transcoder.single_layer_transcoder import load_transcoder_set
from safetensors.torch import load_file, save_file
from transformer_lens import HookedTransformerConfig
from transformers import PreTrainedTokenizerFast


def main() -> None:
    model_dir, out_stem, tokens_json, input_hook, *layers = sys.argv[1:]
    cfg = HookedTransformerConfig(**json.load(open(f"{model_dir}/config.json")))
    # the tokenizer file itself: its tokenizer_config.json names a transformers-5 class that 4.57 lacks
    special = {k: v for k, v in json.load(open(f"{model_dir}/tokenizer_config.json")).items() if k.endswith("_token")}
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=f"{model_dir}/tokenizer.json", **special)  # BOS known: kept
    model = TransformerLensReplacementModel(cfg)
    model.tokenizer = tokenizer  # set directly: TL's set_tokenizer would reload it by name (needs the hub)
    weights = {k: v for k, v in load_file(f"{model_dir}/model.safetensors").items()
               if not k.endswith(("attn.mask", "attn.IGNORE"))}  # buffers the model rebuilds (stored empty)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    assert not unexpected and all(k.endswith(("attn.mask", "attn.IGNORE")) for k in missing), (missing, unexpected)
    transcoders = load_transcoder_set(dict(enumerate(layers)), scan="workbench-peer", feature_input_hook=input_hook,
                                      feature_output_hook="mlp.hook_out", device=torch.device("cpu"),
                                      lazy_encoder=False, lazy_decoder=False)
    model._configure_replacement_model(transcoders)  # what ReplacementModel.from_config does after building
    tokens = torch.tensor(json.load(open(tokens_json)))
    assert int(tokens[0]) in tokenizer.all_special_ids  # else circuit-tracer prepends one and the graphs differ
    cap = os.environ.get("PEER_MAX_FEATURE_NODES")
    base, start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, time.perf_counter()
    graph = attribute(tokens, model, batch_size=int(os.environ.get("PEER_BATCH_SIZE") or 16),
                      max_feature_nodes=int(cap) if cap else None, update_interval=4)
    seconds = time.perf_counter() - start
    peak_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    node_mask, edge_mask, cumulative = prune_graph(graph, node_threshold=0.8, edge_threshold=0.98)
    replacement, completeness = compute_graph_scores(graph)
    save_file({"adjacency": graph.adjacency_matrix.float().contiguous(),
               "active_features": graph.active_features.long().contiguous(),
               "selected_features": graph.selected_features.long().contiguous(),
               "activation_values": graph.activation_values.float().contiguous(),
               "logit_targets": torch.tensor([int(t.vocab_idx) if hasattr(t, "vocab_idx") else int(t)
                                              for t in graph.logit_targets]),
               "logit_probabilities": graph.logit_probabilities.float().contiguous(),
               "node_mask": node_mask.contiguous(), "edge_mask": edge_mask.contiguous()}, f"{out_stem}.safetensors")
    json.dump({"replacement_score": replacement, "completeness_score": completeness, "attribute_seconds": seconds,
               "peak_growth_bytes": peak_growth}, open(f"{out_stem}.json", "w"))


if __name__ == "__main__":
    main()
