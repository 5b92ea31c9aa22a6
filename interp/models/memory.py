"""How much memory a model and its cache will take, estimated before anything is loaded.

``estimate_memory`` counts a checkpoint's parameters from its safetensors headers (no tensor is read)
and adds what caching needs: the converted copy of the weights while TransformerLens takes them over
from transformers, one forward pass, and the shard buffers. ``check_fits_memory`` refuses, with the
estimate, a run that would not fit the free memory of the device.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from interp.models.families import ModelSpecError, tl_config_dict
from interp.models.loading import DEMO_CONFIG, DEMO_WEIGHTS

GIB = 2**30


@dataclass(frozen=True)
class ModelSize:
    """What the estimate needs to know of a model: parameter count, checkpoint bytes and widths."""

    n_params: int
    checkpoint_bytes: int  # the weight files as stored (read once while converting)
    d_model: int
    d_mlp: int
    n_layers: int
    d_vocab: int
    converted: bool  # loaded through transformers: its copy and the converted one exist for a moment


LIBRARIES = GIB  # torch, transformers and TransformerLens in host memory (about 0.5-0.8 GiB measured)


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a cache run needs: ``weights`` (the TransformerLens model), ``conversion`` (transformers' copy, the
    converted state dict and the checkpoint read as stored, host memory only), ``forward`` and ``buffers``."""

    weights: int
    conversion: int
    forward: int
    buffers: int

    @property
    def total(self) -> int:
        return self.weights + self.conversion + self.forward + self.buffers + LIBRARIES

    def on(self, device: str) -> dict[str, int]:
        """Bytes needed in each memory: all of it on the host for a CPU run; else the model's share on the GPU."""
        if not str(device).startswith("cuda"):
            return {"cpu": self.total}
        return {device: self.weights + self.forward + self.buffers, "cpu": self.weights + self.conversion + LIBRARIES}

    def describe(self) -> str:
        parts = [f"weights {self.weights / GIB:.2f}", f"conversion {self.conversion / GIB:.2f}",
                 f"one forward {self.forward / GIB:.2f}", f"shard buffers {self.buffers / GIB:.2f}",
                 f"libraries {LIBRARIES / GIB:.2f}"]
        return f"~{self.total / GIB:.2f} GiB ({', '.join(parts)} GiB)"


def _safetensors_parameters(folder: Path) -> int:
    from safetensors import safe_open

    total = 0
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as handle:
            names = handle.keys()  # a safe_open handle, not a dict: it does not iterate
            total += sum(int(torch.Size(handle.get_slice(name).get_shape()).numel()) for name in names)
    return total


def model_size(spec: str) -> ModelSize | None:
    """The size of a local checkpoint (from its safetensors headers and config) or of the demo; None otherwise."""
    folder = DEMO_WEIGHTS if spec == "demo" else Path(spec)
    if not folder.is_dir() or not any(folder.glob("*.safetensors")):
        return None
    if spec == "demo":
        cfg = json.loads(DEMO_CONFIG.read_text())
    else:
        from transformers import AutoConfig  # transformers only for a local checkpoint

        try:
            cfg = tl_config_dict(AutoConfig.from_pretrained(folder))
        except (OSError, ValueError, KeyError):
            return None  # load_model reports the bad folder itself
    stored = sum(path.stat().st_size for path in folder.glob("*.safetensors"))
    return ModelSize(_safetensors_parameters(folder), stored, cfg["d_model"], cfg.get("d_mlp") or 4 * cfg["d_model"],
                     cfg["n_layers"], cfg["d_vocab"], converted=spec != "demo")


def estimate_memory(size: ModelSize, dtype: torch.dtype, batch_size: int, context_size: int, n_hooks: int,
                    shard_tokens: int, storage_dtype: torch.dtype) -> MemoryEstimate:
    """Bytes needed to cache with this model: weights at ``dtype`` (three copies while converting: transformers',
    the converted state dict, TransformerLens'; plus the checkpoint read as stored), the widest layer's
    activations for one batch (a few ``[batch, ctx, max(d_mlp, d_vocab)]`` tensors at a time), and one shard
    of every hook at the storage dtype (each at most ``max(d_model, d_mlp)`` wide). Measured against the peak
    in ``benchmarks/bench_precision.py``."""
    weights = size.n_params * torch.finfo(dtype).bits // 8
    tokens = batch_size * context_size
    forward = 4 * tokens * max(size.d_mlp, size.d_vocab) * torch.finfo(dtype).bits // 8
    buffers = n_hooks * shard_tokens * max(size.d_model, size.d_mlp) * torch.finfo(storage_dtype).bits // 8
    same_dtype = abs(size.checkpoint_bytes - weights) < 0.01 * weights  # stored at this dtype: no cast copies
    # transformers keeps a checkpoint stored at the load dtype in the file's (mapped) pages; casting makes a copy,
    # and so does the conversion to TransformerLens' layout (measured: bench_precision.py)
    conversion = (size.checkpoint_bytes if same_dtype else 2 * weights + size.checkpoint_bytes) if size.converted else 0
    return MemoryEstimate(weights, conversion, forward, buffers)


def free_memory(device: str) -> int:
    """Bytes free on ``device``: the GPU's free memory, or the host's available memory."""
    if str(device).startswith("cuda"):
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    try:
        import psutil  # optional: it counts reclaimable page cache as available, as the kernel does

        return int(psutil.virtual_memory().available)
    except ImportError:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_fits_memory(estimate: MemoryEstimate, device: str, what: str) -> None:
    """Refuse, with the estimate, a run that needs more than the device's free memory."""
    for where, needed in estimate.on(device).items():
        free = free_memory(where)
        if needed > free:
            raise ModelSpecError(
                f"{what} needs {needed / GIB:.2f} GiB on {where} of {estimate.describe()} but only {free / GIB:.2f} "
                f"GiB is free on {where}; use "
                "--dtype bfloat16 (half the weights), a smaller --batch-size or --shard-tokens, or a larger device"
            )
