"""``AttributionGraph``: the direct-effect adjacency of one prompt's replacement model, with its node layout.

Nodes are ordered as circuit-tracer's ``Graph``: active features (sorted by layer, position, feature), error
nodes (layer-major: ``n_layers × n_pos``; zero at BOS), token nodes (``n_pos``: the token embedding ``W_E[t]``),
logit nodes (the top output tokens). ``adjacency[target, source]`` is the direct effect of the source on the
target's input (a feature's pre-activation ``x · w_enc``; a logit's demeaned logit); error and token rows are
zero. ``readout`` is each target's value on the prompt and ``constant`` the part of it that comes from constants
(attention and layer-norm biases, transcoder ``b_dec``, position embeddings, the BOS position), so
``adjacency.sum(1) + constant == readout``. A graph capped at ``max_feature_nodes`` keeps only the most
influential active features as nodes; ``dropped`` is each target's summed input from the features left out (0
when none is), so ``adjacency.sum(1) + dropped + constant == readout`` holds either way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from jaxtyping import Float, Int
from torch import Tensor

KINDS = ("feature", "error", "token", "logit")
# the stored graph's conventions: 1 (no ``format_version`` field; graphs made before session 7): a token node was
# W_E[t] + W_pos[p] and the BOS position had error nodes; 2: circuit-tracer's (W_E[t] only, no BOS error nodes)
GRAPH_FORMAT = 2
FORMAT_CHANGES = {1: "token nodes then included the position embedding and the BOS position had error nodes"}
TENSORS = ("tokens", "active_features", "activations", "logit_tokens", "logit_probabilities", "adjacency",
           "readout", "constant", "dropped")


@dataclass
class AttributionGraph:
    prompt: str
    tokens: Int[Tensor, " pos"]
    token_strings: list[str]
    n_layers: int
    active_features: Int[Tensor, "n_feat 3"]  # (layer, position, feature index)
    activations: Float[Tensor, " n_feat"]
    logit_tokens: Int[Tensor, " n_logits"]
    logit_probabilities: Float[Tensor, " n_logits"]
    adjacency: Float[Tensor, "n_nodes n_nodes"]
    readout: Float[Tensor, " n_nodes"]
    constant: Float[Tensor, " n_nodes"]
    logit_strings: list[str] = field(default_factory=list)
    transcoders: dict[int, str] = field(default_factory=dict)  # layer -> where its transcoder came from
    notes: list[str] = field(default_factory=list)  # what the graph leaves out (a layer without a transcoder, ...)
    model: str = ""
    dropped: Float[Tensor, " n_nodes"] | None = None  # input from active features that are not nodes (capped graph)
    n_active_features: int | None = None  # active features on the prompt (more than ``n_features`` when capped)

    def __post_init__(self):
        if self.dropped is None:
            self.dropped = torch.zeros(self.adjacency.shape[0])
        if self.n_active_features is None:
            self.n_active_features = self.n_features

    @property
    def n_features(self) -> int:
        return int(self.active_features.shape[0])

    @property
    def n_pos(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def n_logits(self) -> int:
        return int(self.logit_tokens.shape[0])

    @property
    def n_nodes(self) -> int:
        return int(self.adjacency.shape[0])

    @property
    def error_start(self) -> int:
        return self.n_features

    @property
    def token_start(self) -> int:
        return self.n_features + self.n_layers * self.n_pos

    @property
    def logit_start(self) -> int:
        return self.token_start + self.n_pos

    def error_index(self, layer: int, pos: int) -> int:
        return self.error_start + layer * self.n_pos + pos

    def token_index(self, pos: int) -> int:
        return self.token_start + pos

    def logit_index(self, i: int) -> int:
        return self.logit_start + i

    def feature_index(self, layer: int, pos: int, feature: int) -> int:
        """The node of an active feature; a clear error when it is not active on this prompt."""
        match = ((self.active_features[:, 0] == layer) & (self.active_features[:, 1] == pos)
                 & (self.active_features[:, 2] == feature)).nonzero()
        if not len(match):
            raise KeyError(f"feature {feature} of layer {layer} is not active at position {pos}")
        return int(match[0, 0])

    def kind(self, node: int) -> str:
        if node < self.error_start:
            return "feature"
        if node < self.token_start:
            return "error"
        return "token" if node < self.logit_start else "logit"

    def describe(self, node: int) -> dict:
        """``kind``, ``layer`` (tokens -1, logits n_layers), ``pos`` and ``feature`` (-1 unless a feature), a label."""
        kind = self.kind(node)
        if kind == "feature":
            layer, pos, feature = (int(v) for v in self.active_features[node])
            label = f"L{layer} F{feature} @{pos}"
        elif kind == "error":
            layer, pos = divmod(node - self.error_start, self.n_pos)
            feature, label = -1, f"L{layer} error @{pos}"
        elif kind == "token":
            layer, pos, feature = -1, node - self.token_start, -1
            label = f"token {self.token_strings[pos]!r} @{pos}"
        else:
            i = node - self.logit_start
            layer, pos, feature = self.n_layers, self.n_pos - 1, -1
            text = self.logit_strings[i] if i < len(self.logit_strings) else str(int(self.logit_tokens[i]))
            label = f"logit {text!r} (p={float(self.logit_probabilities[i]):.3f})"
        return {"kind": kind, "layer": layer, "pos": pos, "feature": feature, "label": label}

    def completeness_residual(self) -> Float[Tensor, " n_nodes"]:
        """``readout − (Σ incoming edges + dropped + constant)`` per node: 0 up to rounding when the graph is
        exact."""
        return self.readout - (self.adjacency.sum(1) + self.dropped + self.constant)

    def tensors(self) -> dict[str, Tensor]:
        return {name: getattr(self, name).contiguous() for name in TENSORS}

    def meta(self) -> dict:
        return {"prompt": self.prompt, "token_strings": self.token_strings, "n_layers": self.n_layers,
                "logit_strings": self.logit_strings, "transcoders": {str(k): v for k, v in self.transcoders.items()},
                "notes": self.notes, "model": self.model, "format_version": GRAPH_FORMAT,
                "n_active_features": self.n_active_features}

    @classmethod
    def from_parts(cls, tensors: dict[str, Tensor], meta: dict) -> AttributionGraph:
        return cls(meta["prompt"], tensors["tokens"], list(meta["token_strings"]), int(meta["n_layers"]),
                   tensors["active_features"], tensors["activations"], tensors["logit_tokens"],
                   tensors["logit_probabilities"], tensors["adjacency"], tensors["readout"], tensors["constant"],
                   list(meta.get("logit_strings", [])), {int(k): v for k, v in meta.get("transcoders", {}).items()},
                   list(meta.get("notes", [])), meta.get("model", ""), tensors.get("dropped"),
                   meta.get("n_active_features"))


def format_problem(meta: dict) -> str | None:
    """Why a stored graph's metadata cannot be drawn as this version's graphs (None when it can): written in an
    older format (no ``format_version``: 1) or a newer one."""
    version = meta.get("format_version", 1)
    if not isinstance(version, int) or version < 1:
        return f"its format_version is {version!r}, not a positive integer"
    if version < GRAPH_FORMAT:
        return (f"it was written in graph format {version} ({FORMAT_CHANGES.get(version, 'older conventions')}); "
                f"this workbench reads format {GRAPH_FORMAT}")
    if version > GRAPH_FORMAT:
        return f"it was written in graph format {version} by a newer workbench; this one reads format {GRAPH_FORMAT}"
    return None


def empty_adjacency(n_nodes: int) -> Float[Tensor, "n n"]:
    return torch.zeros(n_nodes, n_nodes)
