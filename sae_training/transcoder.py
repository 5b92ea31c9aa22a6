"""Transcoders trained by the SAE trainer: an architecture's encoder reads ``config.hook`` (the MLP's input),
its decoder predicts ``config.target_hook`` (the MLP's output), optionally plus an affine skip ``W_skip x``.

The batch source yields ``[batch, d_in + d_out]`` rows (input and target side by side, from one cache that
holds both hooks), so the shuffle, resume and checkpoint machinery is the SAE trainer's unchanged;
``EnsembleTranscoder.loss`` splits them. One input scale serves both halves (a common linear rescaling, so
``W_skip`` is unchanged by it and the fold into the saved weights is the SAE's).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor, nn

from interp.cache.store import CacheFolder
from interp.cache.stream import LazyChunk
from interp.features.transcoder import Transcoder, transcoder_cfg
from interp.store.io import write_json, write_safetensors
from interp.store.run_folder import SAE_CONFIG, SAE_SPARSITY, SAE_WEIGHTS
from sae_training.architectures import EnsembleSAE, LossParts, build_sae
from sae_training.architectures.base import reconstruction_mse
from sae_training.config import TRANSCODER_ACTIVATIONS, ConfigError
from sae_training.metrics import DENSE_THRESHOLD, density_histogram


# architectures whose codes come from ``activate(x W_enc + b_enc)`` -> the activation they are saved with
class EnsembleTranscoder(nn.Module):
    """K transcoders around one ``EnsembleSAE`` (its parameters, ``activate``, sparsity and aux terms) plus
    an optional ``W_skip [K, d_out, d_in]`` (zeros at the start, as SAELens' ``SkipTranscoder``)."""

    def __init__(self, sae: EnsembleSAE, skip: bool = False):
        super().__init__()
        self.sae = sae
        self.W_skip = nn.Parameter(torch.zeros(sae.n_members, sae.d_in, sae.d_in)) if skip else None

    # what the trainer reads of an SAE, delegated
    n_members = property(lambda self: self.sae.n_members)
    d_in = property(lambda self: self.sae.d_in)
    d_sae = property(lambda self: self.sae.d_sae)
    W_dec = property(lambda self: self.sae.W_dec)
    W_enc = property(lambda self: self.sae.W_enc)
    b_dec = property(lambda self: self.sae.b_dec)
    per_member_optimizer = property(lambda self: self.sae.per_member_optimizer)
    architecture = property(lambda self: self.sae.architecture)

    def sparsity_at(self, step: int) -> float:
        return self.sae.sparsity_at(step)

    def after_step(self) -> None:
        self.sae.after_step()

    def reinitialise(self, parts: LossParts) -> list[int]:
        return self.sae.reinitialise(parts)

    def split(self, batch: Float[Tensor, "batch d_pair"]) -> tuple[Tensor, Tensor]:
        """``(input, target)`` halves of a paired batch."""
        return batch[:, :self.d_in], batch[:, self.d_in:]

    def target_part(self, batch: Float[Tensor, "batch d_pair"]) -> Float[Tensor, "batch d_out"]:
        return self.split(batch)[1]

    def pre_acts(self, x: Float[Tensor, "batch d_in"]) -> Float[Tensor, "K batch d_sae"]:
        """``x W_enc + b_enc``: no ``b_dec`` subtracted (it lives in the output space)."""
        return torch.baddbmm(self.sae.b_enc.unsqueeze(1), x.unsqueeze(0).expand(self.n_members, -1, -1),
                             self.sae.W_enc)

    def encode(self, x: Float[Tensor, "batch d_in"]) -> Float[Tensor, "K batch d_sae"]:
        return self.sae.activate(self.pre_acts(x))

    def decode(self, f: Float[Tensor, "K batch d_sae"]) -> Float[Tensor, "K batch d_out"]:
        """The features' part of the prediction (no skip term: that needs the input)."""
        return self.sae.decode(f)

    def skip(self, x: Float[Tensor, "batch d_in"]) -> Float[Tensor, "K batch d_out"]:
        if self.W_skip is None:
            return x.new_zeros(self.n_members, *x.shape)
        return torch.matmul(x.unsqueeze(0), self.W_skip.transpose(1, 2))

    def forward(self, x: Float[Tensor, "batch d_in"]) -> Float[Tensor, "K batch d_out"]:
        return self.decode(self.encode(x)) + self.skip(x)

    def loss(self, batch: Float[Tensor, "batch d_pair"], sparsity_coefficient: float = 0.0,
             dead: Tensor | None = None, mse_reduction: str = "sum") -> LossParts:
        """MSE of the predicted target, the architecture's sparsity term and its aux term (AuxK models the
        target's residual) from the dense codes."""
        x, y = self.split(batch.detach())
        pre = self.pre_acts(x)
        f = self.sae.activate(pre)
        y_hat = self.decode(f) + self.skip(x)
        mse = reconstruction_mse(y_hat, y, mse_reduction)
        parts = LossParts(mse, self.sae.sparsity_loss(f, pre, sparsity_coefficient),
                          self.sae.aux_loss(y, y_hat, pre.detach(), dead), y_hat, dense_f=f, target=y)
        return parts

    def member(self, i: int, scale: float = 1.0, hook_in: str = "", hook_out: str = "") -> Transcoder:
        """Member ``i`` on raw activations (the input scale folded in) as an ``interp`` ``Transcoder``."""
        state = self.sae.member_state(i, scale)
        activation = TRANSCODER_ACTIVATIONS[self.sae.architecture]
        k = self.sae.member_k[i] if activation == "topk" else None
        return Transcoder(state["W_enc"], state["b_enc"], state["W_dec"], state["b_dec"], activation,
                          state.get("threshold"), k,
                          None if self.W_skip is None else self.W_skip[i].detach().clone(), hook_in, hook_out)


def build_transcoder(config, d_pair: int, seed: int) -> EnsembleTranscoder:
    """The config's architecture as K transcoders from ``config.hook`` to ``config.target_hook`` (paired rows
    ``d_pair`` wide: input and target of equal width)."""
    sae = build_sae(config.architecture, config.shape(d_pair // 2), config.options, seed=seed)
    return EnsembleTranscoder(sae, skip=config.skip_connection)


def paired_chunks(cache: CacheFolder, hook: str, target_hook: str, order: list[int],
                  exclude_bos: bool = True) -> Iterator[LazyChunk]:
    """Whole shards in ``order`` as lazy ``[input | target]`` rows (BOS rows dropped): the transcoder store's
    chunks, sized from the token files so that a resumed store seeks without reading the shards it skips. Both
    hooks come from the same forward pass of the cache, so row i of each is the same token."""
    for shard in order:
        keep = cache.tokens(shard)["position"] != 0 if exclude_bos else None
        size = int(keep.sum()) if keep is not None else int(cache.manifest["shards"][shard]["n_tokens"])

        def fetch(shard=shard, keep=keep) -> Tensor:
            rows = torch.cat([cache.activations(hook, shard).float(), cache.activations(target_hook, shard).float()],
                             dim=1)
            return rows[keep] if keep is not None else rows

        yield LazyChunk(size, fetch)


def paired_width(cache: CacheFolder, hook: str, target_hook: str) -> int:
    """The width of ``[input | target]`` rows from ``cache``; a missing hook or unequal widths are refused."""

    missing = [h for h in (hook, target_hook) if h not in cache.hooks]
    if missing:
        raise ConfigError(f"cache {cache.directory} has no hook {missing}; it holds {cache.hooks}. Cache both the "
                          "MLP's input and output (`workbench cache --hooks <in>,<out>`) to train a transcoder")
    if cache.d(hook) != cache.d(target_hook):
        raise ConfigError(f"{hook} has width {cache.d(hook)} but {target_hook} has width {cache.d(target_hook)}; a "
                          "transcoder here maps an MLP's input to its output, both d_model wide: pick those hooks")
    return 2 * cache.d(hook)


@torch.no_grad()
def evaluate_transcoders(tc: EnsembleTranscoder, batches, scale: float = 1.0) -> tuple[list[dict], Tensor]:
    """Per member: MSE and FVU of the target (the MLP output), L0, dead and dense fractions, over ``batches``
    of raw ``[input | target]`` rows; and the feature densities ``[K, d_sae]``."""

    was_training = tc.training
    tc.eval()
    K = tc.n_members
    error, l0, fired, tokens = torch.zeros(K), torch.zeros(K), torch.zeros(K, tc.d_sae), 0
    y_sum, y_sq = None, 0.0
    for batch in batches:
        x, y = tc.split(batch.to(tc.W_enc.device, torch.float32))
        f = tc.encode(x * scale)
        y_hat = (tc.decode(f) + tc.skip(x * scale)) / scale
        error += (y_hat - y).pow(2).sum((-1, -2)).cpu()
        l0 += (f != 0).sum((-1, -2)).float().cpu()
        fired += (f != 0).sum(1).float().cpu()
        tokens += y.shape[0]
        y_sum = y.sum(0).cpu() if y_sum is None else y_sum + y.sum(0).cpu()
        y_sq += y.pow(2).sum().item()
    tc.train(was_training)
    variance = y_sq - (y_sum.pow(2).sum() / tokens).item()
    density = fired / tokens
    members = [{"mse": float(error[i] / tokens), "fvu": float(error[i] / variance), "l0": float(l0[i] / tokens),
                "dead_fraction": float((density[i] == 0).float().mean()),
                "dense_fraction": float((density[i] > DENSE_THRESHOLD).float().mean()),
                "density_histogram": density_histogram(density[i]), "eval_tokens": tokens} for i in range(K)]
    return members, density


def save_transcoder(folder: Path | str, transcoder: Transcoder, *, model_name: str | None, context_size: int,
                    density: Float[Tensor, " d_sae"] | None = None, extra_metadata: dict | None = None) -> Path:
    """A transcoder as a SAELens folder (``sae_lens.SAE.load_from_disk`` opens the ReLU and JumpReLU kinds)."""
    folder = Path(folder)
    write_safetensors(folder / SAE_WEIGHTS, transcoder.tensors())
    if density is not None:
        write_safetensors(folder / SAE_SPARSITY, {"sparsity": torch.log10(density.float().cpu().clamp_min(1e-10))})
    cfg = transcoder_cfg(transcoder, model_name=model_name, context_size=context_size,
                         extra_metadata={"trained_with": "interp-workbench sae_training", **(extra_metadata or {})})
    write_json(folder / SAE_CONFIG, cfg, durable=True)
    return folder
