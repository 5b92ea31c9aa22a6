"""A transcoder: a sparse dictionary that reads an MLP's input and predicts the MLP's output.

``f = σ(x W_enc + b_enc)``, ``ŷ = f W_dec + b_dec (+ W_skip x)`` (Dunefsky et al. 2024; the affine skip
of Paulo et al. 2025). ``σ`` is ReLU, JumpReLU (per-latent threshold) or TopK. No ``b_dec`` is taken
from the input: it lives in the output space (as SAELens' ``Transcoder.process_sae_in``).

On disk: a SAELens folder (``cfg.json`` + ``sae_weights.safetensors``) with SAELens 6's transcoder
architectures (``transcoder``, ``skip_transcoder``, ``jumprelu_transcoder``, ``jumprelu_skip_transcoder``,
which ``sae_lens.SAE.load_from_disk`` opens), and ``topk_transcoder`` / ``topk_skip_transcoder`` for TopK,
which SAELens 6 does not have (same tensors plus ``k`` in ``cfg.json``). ``cfg.json``'s metadata names the
input hook (``hook_name``) and the output hook (``hook_name_out``). A circuit-tracer per-layer file
(``W_enc [d_sae, d_in]``, ``activation_function.threshold``, ``k``) is read too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Float
from safetensors import safe_open
from torch import Tensor

from interp.store.errors import DictionaryError
from interp.store.io import read_json
from interp.store.run_folder import SAE_CONFIG, SAE_WEIGHTS

# SAELens architecture name -> (activation, has a skip connection)
SAELENS_TRANSCODERS = {
    "transcoder": ("relu", False), "skip_transcoder": ("relu", True),
    "jumprelu_transcoder": ("jumprelu", False), "jumprelu_skip_transcoder": ("jumprelu", True),
    "topk_transcoder": ("topk", False), "topk_skip_transcoder": ("topk", True),
}


def saelens_transcoder_architecture(activation: str, skip: bool) -> str:
    """The ``cfg.json`` architecture name of a transcoder with this activation and skip."""
    return next(name for name, spec in SAELENS_TRANSCODERS.items() if spec == (activation, skip))


@dataclass
class Transcoder:
    """One transcoder (one layer); satisfies the ``Dictionary`` protocol on the MLP's input."""

    W_enc: Float[Tensor, "d_in d_sae"]
    b_enc: Float[Tensor, " d_sae"]
    W_dec: Float[Tensor, "d_sae d_out"]
    b_dec: Float[Tensor, " d_out"]
    activation: str = "relu"  # relu | jumprelu | topk
    threshold: Float[Tensor, " d_sae"] | None = None
    k: int | None = None
    W_skip: Float[Tensor, "d_out d_in"] | None = None
    hook_in: str = ""
    hook_out: str = ""

    def __post_init__(self) -> None:
        d_in, d_sae = self.W_enc.shape
        shapes = {"b_enc": (self.b_enc, (d_sae,)), "W_dec": (self.W_dec, (d_sae, self.W_dec.shape[-1])),
                  "b_dec": (self.b_dec, (self.W_dec.shape[-1],))}
        if self.W_skip is not None:
            shapes["W_skip"] = (self.W_skip, (self.W_dec.shape[-1], d_in))
        if self.activation == "jumprelu":
            shapes["threshold"] = (self.threshold, (d_sae,))
        for name, (tensor, shape) in shapes.items():
            if tensor is None or tuple(tensor.shape) != shape:
                raise DictionaryError(f"transcoder tensor '{name}' has shape "
                                      f"{None if tensor is None else tuple(tensor.shape)}, expected {shape}")
        if self.activation not in ("relu", "jumprelu", "topk"):
            raise DictionaryError(f"unknown transcoder activation '{self.activation}'; use relu, jumprelu or topk")
        if self.activation == "topk" and not (isinstance(self.k, int) and 0 < self.k <= d_sae):
            raise DictionaryError(f"a TopK transcoder needs 0 < k <= d_sae={d_sae}, got k={self.k}")

    @property
    def d_in(self) -> int:
        return self.W_enc.shape[0]

    @property
    def d_sae(self) -> int:
        return self.W_enc.shape[1]

    @property
    def d_out(self) -> int:
        return self.W_dec.shape[1]

    @property
    def hook_name(self) -> str:
        """Where the features are read (what dashboards encode): the input hook."""
        return self.hook_in

    @property
    def layer(self) -> int | None:
        """The block index of the input hook (``blocks.<L>.…``), None for another hook."""
        parts = self.hook_in.split(".")
        return int(parts[1]) if len(parts) > 1 and parts[0] == "blocks" and parts[1].isdigit() else None

    def pre_acts(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_sae"]:
        return x @ self.W_enc + self.b_enc

    def activate(self, pre: Float[Tensor, "... d_sae"]) -> Float[Tensor, "... d_sae"]:
        if self.activation == "relu":
            return pre.relu()
        if self.activation == "jumprelu":
            return pre * (pre > self.threshold)
        values, indices = pre.topk(self.k, dim=-1)
        return torch.zeros_like(pre).scatter_(-1, indices, values.relu())

    def encode(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_sae"]:
        return self.activate(self.pre_acts(x))

    def decode(self, f: Float[Tensor, "... d_sae"]) -> Float[Tensor, "... d_out"]:
        """The features' part of the output (``f W_dec + b_dec``), without the skip term."""
        return f @ self.W_dec + self.b_dec

    def skip(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_out"]:
        return x @ self.W_skip.T if self.W_skip is not None else x.new_zeros(*x.shape[:-1], self.d_out)

    def forward(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_out"]:
        return self.decode(self.encode(x)) + self.skip(x)

    __call__ = forward

    def to(self, device=None, dtype=None) -> Transcoder:
        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device=device, dtype=dtype)

        return Transcoder(move(self.W_enc), move(self.b_enc), move(self.W_dec), move(self.b_dec), self.activation,
                          move(self.threshold), self.k, move(self.W_skip), self.hook_in, self.hook_out)

    def tensors(self) -> dict[str, Tensor]:
        """The SAELens ``sae_weights.safetensors`` tensors."""
        out = {"W_enc": self.W_enc, "b_enc": self.b_enc, "W_dec": self.W_dec, "b_dec": self.b_dec}
        if self.W_skip is not None:
            out["W_skip"] = self.W_skip
        if self.activation == "jumprelu":
            out["threshold"] = self.threshold
        return {name: t.detach().float().contiguous().cpu() for name, t in out.items()}

    def circuit_tracer_tensors(self) -> dict[str, Tensor]:
        """circuit-tracer's per-layer layout (``SingleLayerTranscoder.to_safetensors``): ``W_enc [d_sae, d_in]``."""
        out = {"W_enc": self.W_enc.T, "W_dec": self.W_dec, "b_enc": self.b_enc, "b_dec": self.b_dec}
        if self.W_skip is not None:
            out["W_skip"] = self.W_skip
        if self.activation == "jumprelu":
            out["activation_function.threshold"] = self.threshold
        out = {name: t.detach().float().contiguous().cpu() for name, t in out.items()}
        if self.activation == "topk":
            out["k"] = torch.tensor(self.k)
        return out


def transcoder_cfg(transcoder: Transcoder, *, model_name: str | None, context_size: int,
                   extra_metadata: dict | None = None) -> dict:
    """The SAELens ``cfg.json`` of a transcoder folder."""
    import importlib.metadata

    version = importlib.metadata.version("sae-lens")
    cfg = {
        "architecture": saelens_transcoder_architecture(transcoder.activation, transcoder.W_skip is not None),
        "d_in": transcoder.d_in, "d_sae": transcoder.d_sae, "d_out": transcoder.d_out,
        "dtype": "float32", "device": "cpu", "apply_b_dec_to_input": False, "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {"sae_lens_version": version, "sae_lens_training_version": version, "model_name": model_name,
                     "hook_name": transcoder.hook_in, "hook_name_out": transcoder.hook_out,
                     "hook_head_index": None, "context_size": context_size, "prepend_bos": True,
                     "seqpos_slice": [None], "model_from_pretrained_kwargs": {}, **(extra_metadata or {})},
    }
    if transcoder.activation == "topk":
        cfg["k"] = transcoder.k
    return cfg


def is_transcoder_folder(folder: Path | str) -> bool:
    path = Path(folder) / SAE_CONFIG
    if not path.exists():
        return False
    cfg = read_json(path, "transcoder config", DictionaryError)
    return isinstance(cfg, dict) and cfg.get("architecture") in SAELENS_TRANSCODERS


def _read_tensors(path: Path) -> dict[str, Tensor]:
    if not path.exists():
        raise DictionaryError(f"{path} is missing; the transcoder folder is incomplete, re-export it")
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {name: handle.get_tensor(name).float() for name in handle.keys()}  # noqa: SIM118 - a safe_open handle, not a dict
    except Exception as error:  # noqa: BLE001 - a damaged file of any kind becomes one clear line
        raise DictionaryError(f"{path} is not a readable safetensors file ({error}); re-export it") from None


def load_transcoder(path: Path | str, device: str = "cpu") -> Transcoder:
    """A SAELens transcoder folder (ours or SAELens'), or a circuit-tracer per-layer ``.safetensors`` file."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return _load_circuit_tracer(path).to(device)
    cfg = read_json(path / SAE_CONFIG, "transcoder config", DictionaryError)
    architecture = cfg.get("architecture") if isinstance(cfg, dict) else None
    if architecture not in SAELENS_TRANSCODERS:
        raise DictionaryError(f"{path} holds a '{architecture}', not a transcoder (architectures: "
                              f"{sorted(SAELENS_TRANSCODERS)}); train one with `workbench train --target-hook`")
    activation, skip = SAELENS_TRANSCODERS[architecture]
    tensors = _read_tensors(path / SAE_WEIGHTS)
    needed = ["W_enc", "b_enc", "W_dec", "b_dec"] + ["W_skip"] * skip + ["threshold"] * (activation == "jumprelu")
    missing = [name for name in needed if name not in tensors]
    if missing:
        raise DictionaryError(f"{path / SAE_WEIGHTS} lacks {missing} (needed by a '{architecture}'); re-export it")
    metadata = cfg.get("metadata") or {}
    transcoder = Transcoder(tensors["W_enc"], tensors["b_enc"], tensors["W_dec"], tensors["b_dec"], activation,
                            tensors.get("threshold"), cfg.get("k"), tensors.get("W_skip"),
                            metadata.get("hook_name") or "", metadata.get("hook_name_out") or "")
    if transcoder.d_out != cfg.get("d_out", transcoder.d_out) or transcoder.d_sae != cfg.get("d_sae"):
        raise DictionaryError(f"{path}: tensor shapes disagree with {SAE_CONFIG} (d_sae {cfg.get('d_sae')}, "
                              f"d_out {cfg.get('d_out')}); re-export it")
    return transcoder.to(device)


def _load_circuit_tracer(path: Path) -> Transcoder:
    tensors = _read_tensors(path)
    if "W_enc" not in tensors or "W_dec" not in tensors:
        raise DictionaryError(f"{path} is not a circuit-tracer transcoder file (no W_enc / W_dec)")
    threshold = tensors.get("activation_function.threshold")
    k = int(tensors["k"]) if "k" in tensors else None
    activation = "topk" if k is not None else "jumprelu" if threshold is not None else "relu"
    return Transcoder(tensors["W_enc"].T.contiguous(), tensors["b_enc"], tensors["W_dec"], tensors["b_dec"],
                      activation, threshold, k, tensors.get("W_skip"))


def replacement_hooks(transcoders: list[Transcoder], ablate: bool = False) -> list[tuple[str, object]]:
    """Forward hooks replacing each transcoder's output hook by its prediction from its input hook (or by
    zeros, ``ablate``), positions after the first (BOS is left clean, as training excludes it)."""
    hooks, inputs = [], {}
    for index, transcoder in enumerate(transcoders):
        def keep(activation: Tensor, hook=None, index=index) -> None:
            inputs[index] = activation

        def replace(activation: Tensor, hook=None, index=index, transcoder=transcoder) -> Tensor:
            out = activation.clone()
            out[:, 1:] = 0.0 if ablate else transcoder(inputs.pop(index)[:, 1:].float()).to(activation.dtype)
            return out

        hooks += [] if ablate else [(transcoder.hook_in, keep)]
        hooks.append((transcoder.hook_out, replace))
    return hooks


@torch.no_grad()
def transcoder_ce_loss_recovered(model, transcoders: list[Transcoder], tokens: Tensor) -> dict[str, float]:
    """``(CE_zero − CE_tc) / (CE_zero − CE_clean)`` with every given MLP's output replaced by its transcoder
    at once (later transcoders read the input the earlier replacements produce), against zero-ablating them."""
    clean = float(model(tokens, return_type="loss"))
    replaced = float(model.run_with_hooks(tokens, return_type="loss", fwd_hooks=replacement_hooks(transcoders)))
    ablated = float(model.run_with_hooks(tokens, return_type="loss",
                                         fwd_hooks=replacement_hooks(transcoders, ablate=True)))
    denominator = ablated - clean
    recovered = (ablated - replaced) / denominator if abs(denominator) > 1e-12 else float("nan")
    return {"ce_clean": clean, "ce_sae": replaced, "ce_zero_ablation": ablated, "ce_loss_recovered": recovered}
