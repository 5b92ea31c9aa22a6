"""Synthetic ground truth (the MFR paper's generator, PAPERS.md §1.5) and the MFR-vs-baseline benchmark.

Many more true features than dimensions, sparse non-negative coefficients, correlation through groups
(features co-occur only within their group, Zipf-like preference inside a group), optional noise.
"""

from __future__ import annotations

import statistics
import tempfile
from dataclasses import asdict, dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.store.errors import InputError
from sae_training.config import TrainConfig
from sae_training.metrics import ground_truth_similarity
from sae_training.trainer import train_saes


@dataclass(frozen=True)
class SyntheticData:
    """Generator settings; the paper uses d=256, n_true=512, groups=12, active=32, decay=0.99."""

    d: int = 64
    n_true: int = 128
    groups: int = 4
    active: int = 8
    decay: float = 0.99
    noise_std: float = 0.0
    shared_support_per_chunk: bool = False  # True: the paper code's quirk (one support per group per chunk)
    chunk: int = 1_000_000


def generate(spec: SyntheticData, n_points: int, seed: int = 0
             ) -> tuple[Float[Tensor, "n d"], Float[Tensor, "d n_true"], Int[Tensor, " n"], Float[Tensor, "n n_true"]]:
    """Return ``(X, F, group_id, coeffs)`` with ``X = coeffs @ F.T (+ noise)``; F's columns are the features."""
    size = spec.n_true // spec.groups
    if spec.active > size:
        raise InputError(f"active={spec.active} exceeds the group size {size} (n_true // groups)")
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(spec.d, spec.n_true, generator=g)
    preference = spec.decay ** torch.arange(size, dtype=torch.float64)
    group = torch.randint(0, spec.groups, (n_points,), generator=g)
    if spec.shared_support_per_chunk:
        support = torch.empty(n_points, spec.active, dtype=torch.long)
        for start in range(0, n_points, spec.chunk):
            per_group = torch.stack([torch.multinomial(preference, spec.active, generator=g)
                                     for _ in range(spec.groups)])
            stop = min(start + spec.chunk, n_points)
            support[start:stop] = per_group[group[start:stop]]
    else:
        support = torch.multinomial(preference.expand(n_points, size), spec.active, generator=g)
    coeffs = torch.zeros(n_points, spec.n_true)
    coeffs.scatter_(1, group.unsqueeze(1) * size + support, torch.rand(n_points, spec.active, generator=g))
    x = coeffs @ features.T
    if spec.noise_std > 0:
        x = x + spec.noise_std * torch.randn(x.shape, generator=g)
    return x, features, group, coeffs


PAPER_DATA = SyntheticData(d=256, n_true=512, groups=12, active=32, decay=0.99)  # the MFR code's synthetic.yaml


def sample_points(spec: SyntheticData, features: Float[Tensor, "d n_true"], n_points: int,
                  generator: torch.Generator) -> Float[Tensor, "n d"]:
    """Fresh points from fixed ``features`` (per-point supports): group ~ U{0..G-1}, 32 of its features by
    the 0.99^j preference without replacement, U(0,1) magnitudes."""
    size = spec.n_true // spec.groups
    preference = spec.decay ** torch.arange(size, dtype=torch.float64)
    group = torch.randint(0, spec.groups, (n_points,), generator=generator)
    support = torch.multinomial(preference.expand(n_points, size), spec.active, generator=generator)
    index = group.unsqueeze(1) * size + support
    magnitude = torch.rand(n_points, spec.active, generator=generator)
    # Σ_j c_j F[:, j] over the active features only: the dense ``coeffs @ F.T`` without the zeros
    return torch.nn.functional.embedding_bag(index, features.T.contiguous(), per_sample_weights=magnitude,
                                             mode="sum")


class SyntheticStream:
    """Fresh synthetic points every batch (no passes over a fixed set), as train_saes' ``activations``.

    Batch b of stream seed s is drawn from its own generator ``(s, b)``, so a resumed run sees the same
    batches; the features are fixed by ``data_seed`` (``generate``'s features for that seed)."""

    def __init__(self, spec: SyntheticData, data_seed: int = 0):
        self.spec = spec
        self.features = generate(spec, 1, seed=data_seed)[1]
        self.d_in = spec.d

    def open_stream(self, seed: int, start_batch: int, batch_size: int) -> _StreamStore:
        return _StreamStore(self, seed, start_batch, batch_size)


class _StreamStore:
    def __init__(self, stream: SyntheticStream, seed: int, start_batch: int, batch_size: int):
        self.stream, self.seed, self.position, self.batch_size = stream, seed, start_batch, batch_size
        self.d_in = stream.d_in

    def __iter__(self):
        return self

    def __next__(self) -> Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.position)
        self.position += 1
        return sample_points(self.stream.spec, self.stream.features, self.batch_size, generator)


@dataclass(frozen=True)
class SyntheticBenchmark:
    """MFR against the same ensemble without MFR, equal steps; defaults are a CPU-sized version of the paper's."""

    data: SyntheticData = SyntheticData()
    n_points: int = 200_000
    d_sae: int = 128
    k: int = 8
    n_members: int = 2
    mfr_coefficient: float = 3.0
    steps: int = 300
    batch_size: int = 2048
    lr: float = 3e-3
    n_seeds: int = 3


def _summarise(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.pstdev(values) if len(values) > 1 else 0.0}


def run_benchmark(bench: SyntheticBenchmark, progress: bool = False) -> dict:
    """Train with and without MFR for each seed; report MMCS to truth, recovery at cos > 0.9, FVU, L0."""
    rows: dict[str, dict[str, list[float]]] = {"baseline": {}, "mfr": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(bench.n_seeds):
            x, features, _, _ = generate(bench.data, bench.n_points, seed=seed)
            for setting, coefficient in (("baseline", 0.0), ("mfr", bench.mfr_coefficient)):
                config = TrainConfig(architecture="topk", d_sae=bench.d_sae, k=bench.k, n_members=bench.n_members,
                                     mfr_coefficient=coefficient, n_tokens=bench.steps * bench.batch_size,
                                     batch_size=bench.batch_size, lr=bench.lr, mse_reduction="mean",
                                     normalize_activations="none", b_dec_init="zeros", log_every=bench.steps,
                                     checkpoint_every=bench.steps, eval_batches=4, eval_ce_batches=0, seed=seed,
                                     buffer_tokens=8 * bench.batch_size)
                run = train_saes(config, f"{tmp}/{setting}-{seed}", activations=x, progress=progress)
                for i, member in enumerate(run.evaluation["members"]):
                    truth = ground_truth_similarity(run.member(i).W_dec, features.T)
                    for name, value in {**truth, "fvu": member["fvu"], "l0": member["l0"]}.items():
                        rows[setting].setdefault(name, []).append(value)
    result = {"settings": {name: {metric: _summarise(values) for metric, values in metrics.items()}
                           for name, metrics in rows.items()},
              "config": asdict(bench)}
    base, mfr = result["settings"]["baseline"], result["settings"]["mfr"]
    result["mfr_minus_baseline"] = {m: mfr[m]["mean"] - base[m]["mean"] for m in base}
    return result
