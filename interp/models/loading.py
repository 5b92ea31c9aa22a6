"""Model loading: ``load_model(spec)`` returns a ``HookedTransformer`` for any model spec.

A model spec is ``demo`` (the bundled 2-layer model), a local directory holding a Hugging Face
checkpoint (``config.json`` + weights + tokenizer), or a TransformerLens pretrained name, which
works offline when the local Hugging Face cache already holds it.
"""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from transformer_lens.utilities import get_act_name

from interp.models.families import (
    ModelSpecError,
    check_matches_transformers,
    family,
    processing_flags,
    reference_logprobs,
    tl_config,
    tl_config_dict,
)
from interp.store.cache_config import DEFAULT_HOOK  # noqa: F401 - re-exported: the API's default hook

DEMO_WEIGHTS = Path(__file__).parent / "demo" / "weights"
DEMO_CONFIG = DEMO_WEIGHTS / "config.json"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_device(device: str | None = None) -> str:
    """``auto``/None picks CUDA when present, else CPU."""
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ModelSpecError(f"unknown dtype '{dtype}'; use one of {sorted(DTYPES)}")
    return DTYPES[dtype]


def demo_tokenizer():
    """The bundled BPE tokenizer as a Hugging Face fast tokenizer (BOS prepended, as TL expects)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(DEMO_WEIGHTS))


def demo_circuit() -> dict:
    """The demo model's detected previous-token and induction heads (``circuit.json``)."""
    return json.loads((DEMO_WEIGHTS / "circuit.json").read_text())


def _load_demo(device: str, dtype: torch.dtype):
    from safetensors.torch import load_file
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    config_path = DEMO_CONFIG
    weights_path = DEMO_WEIGHTS / "model.safetensors"
    if not weights_path.exists():
        raise ModelSpecError(
            f"demo weights missing at {weights_path}; rebuild them with `python -m interp.models.demo.train_demo_model`"
        )
    cfg = HookedTransformerConfig(**json.loads(config_path.read_text()), device=device, dtype=dtype)
    model = HookedTransformer(cfg, tokenizer=demo_tokenizer(), move_to_device=False)
    model.load_state_dict(load_file(str(weights_path)))
    with contextlib.redirect_stdout(io.StringIO()):  # TransformerLens prints each move; keep stdout clean
        model = model.to(device).to(dtype)
    return model.eval()


def _checkpoint_config(path: Path):
    """The checkpoint's ``PretrainedConfig``, read before any weights so a bad folder fails fast."""
    from transformers import AutoConfig

    if not (path / "config.json").exists():
        raise ModelSpecError(
            f"{path} is a directory but holds no config.json; point at a Hugging Face checkpoint "
            "saved with `save_pretrained` (config.json, weights and tokenizer files)"
        )
    try:
        return AutoConfig.from_pretrained(path)
    except (OSError, ValueError, KeyError) as error:
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ModelSpecError(
            f"{path / 'config.json'} is not a config transformers can read ({first_line}); "
            "re-save the checkpoint with `save_pretrained`"
        ) from error


def _checkpoint_tokenizer(path: Path):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, TypeError) as error:
        raise ModelSpecError(
            f"{path} holds no usable tokenizer ({type(error).__name__}); save the tokenizer "
            "there too with `tokenizer.save_pretrained`"
        ) from error
    if not tokenizer.encode("The cat sat.", add_special_tokens=False):  # transformers builds an empty one
        raise ModelSpecError(
            f"{path} holds no usable tokenizer (it encodes text to no tokens); save the "
            "tokenizer there too with `tokenizer.save_pretrained`"
        )
    return tokenizer


def _load_local_checkpoint(path: Path, device: str, dtype: torch.dtype, fold_ln: bool, verify: bool):
    from transformer_lens import HookedTransformer
    from transformer_lens import loading_from_pretrained as loading
    from transformers import AutoModelForCausalLM

    hf_config = _checkpoint_config(path)
    tl_config(hf_config, path.name, fold_ln=fold_ln, device=device, dtype=dtype)  # a bad family fails before weights
    tokenizer = _checkpoint_tokenizer(path)
    try:
        hf_model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()
    except OSError as error:  # e.g. no model.safetensors beside config.json
        raise ModelSpecError(
            f"{path} holds no loadable weights ({str(error).splitlines()[0]}); save the model "
            "there with `save_pretrained`"
        ) from error
    cfg = tl_config(hf_model.config, path.name, fold_ln=fold_ln, device=device, dtype=dtype)
    state_dict = loading.get_pretrained_state_dict(str(path), cfg, hf_model, dtype=dtype)
    model = HookedTransformer(cfg, tokenizer, move_to_device=False)
    model.load_and_process_state_dict(state_dict, **processing_flags(cfg, fold_ln))
    reference = reference_logprobs(hf_model) if verify else None  # on the host, before transformers' copy goes
    name = family(hf_model.config)
    del hf_model, state_dict
    with contextlib.redirect_stdout(io.StringIO()):  # TransformerLens prints each move; keep stdout clean
        model = model.to(device).eval()
    if reference is not None:
        check_matches_transformers(model, reference, path, name)
    return model


def _check_pretrained_name(name: str) -> None:
    from transformer_lens import loading_from_pretrained as loading

    try:
        loading.get_official_model_name(name)
    except ValueError as error:
        if name.startswith((".", "/", "~")) or Path(name).parent.exists() and Path(name).parent != Path("."):
            raise ModelSpecError(
                f"model checkpoint directory '{name}' does not exist; pass a directory saved with "
                "`save_pretrained` (config.json, weights, tokenizer)"
            ) from error
        raise ModelSpecError(
            f"unknown model spec '{name}': not 'demo', not an existing directory, and not a "
            "TransformerLens pretrained name (e.g. 'gpt2'). Pass 'demo', a TransformerLens name, "
            "or a local directory with a Hugging Face checkpoint"
        ) from error


def _not_cached(name: str, error: Exception) -> ModelSpecError:
    return ModelSpecError(
        f"the weights of '{name}' are not in the local Hugging Face cache and cannot be "
        f"downloaded here ({error}). Save the checkpoint on a machine with access "
        "(`AutoModelForCausalLM.from_pretrained(name).save_pretrained(DIR)` plus the tokenizer) "
        "and pass DIR as the model spec"
    )


def _load_pretrained_name(name: str, device: str, dtype: torch.dtype, fold_ln: bool):
    from transformer_lens import HookedTransformer

    _check_pretrained_name(name)
    try:
        return HookedTransformer.from_pretrained(
            name,
            device=device,
            dtype=dtype,
            fold_ln=fold_ln,
            center_writing_weights=fold_ln,
            center_unembed=fold_ln,
        ).eval()
    except OSError as error:
        raise _not_cached(name, error) from error


def load_model(
    spec: str = "demo",
    device: str | None = None,
    dtype: str | torch.dtype | None = None,
    fold_ln: bool = False,
    verify: bool = True,
):
    """Load a model spec as a ``HookedTransformer`` (eval mode) with its tokenizer.

    ``fold_ln`` folds layer-norm weights into the next linear layers (TransformerLens' usual
    processing); caches default to the unprocessed model so activations match the original.
    ``verify`` checks a local checkpoint's log-probs against transformers' on 16 tokens once loaded.
    """
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype)
    if spec == "demo":
        return _load_demo(device, torch_dtype)
    path = Path(spec)
    if path.is_dir():
        return _load_local_checkpoint(path, device, torch_dtype, fold_ln, verify)
    return _load_pretrained_name(spec, device, torch_dtype, fold_ln)


MAX_DEFAULT_CONTEXT = 1024  # the default window: the model's context, but no longer than this


@dataclass(frozen=True)
class ModelShape:
    """A model's sizes, read from its config without loading weights: what the defaults follow."""

    n_layers: int
    d_model: int
    n_ctx: int

    @property
    def default_hook(self) -> str:
        """The middle layer's residual stream (``blocks.{n_layers // 2}.hook_resid_post``)."""
        return get_act_name("resid_post", self.n_layers // 2)

    @property
    def default_context(self) -> int:
        return min(self.n_ctx, MAX_DEFAULT_CONTEXT)


def model_shape(spec: str) -> ModelShape:
    """The shape of a model spec from its config alone (the demo's, a checkpoint's, a cached TL name's);
    the same one-line errors as ``load_model`` for a spec that cannot load."""
    if spec == "demo":
        cfg = json.loads(DEMO_CONFIG.read_text())
    elif Path(spec).is_dir():
        cfg = tl_config_dict(_checkpoint_config(Path(spec)))
    else:
        from transformer_lens import loading_from_pretrained as loading

        _check_pretrained_name(spec)
        try:
            cfg = loading.get_pretrained_model_config(spec).to_dict()
        except OSError as error:
            raise _not_cached(spec, error) from error
    return ModelShape(cfg["n_layers"], cfg["d_model"], cfg["n_ctx"])


def random_model(config: dict, tokenizer=None, seed: int | None = 0, device: str | None = None):
    """A randomly initialised ``HookedTransformer`` of a TransformerLens config dict (benchmarks and tests at a
    given shape): with ``load_model``, the only way the workbench builds one, so a TransformerLens 4 backend
    (``TransformerBridge``) replaces these two functions."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(**{**config, "seed": seed, **({"device": device} if device else {})})
    return HookedTransformer(cfg, tokenizer=tokenizer).eval()


def model_fingerprint(model) -> str:
    """A short hash of the model's config and first weights: detects a changed model on resume."""
    import hashlib

    digest = hashlib.sha256(json.dumps(model.cfg.to_dict(), sort_keys=True, default=str).encode())
    for name, tensor in list(model.state_dict().items())[:4]:
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().flatten()[:256].numpy().tobytes())
    return digest.hexdigest()[:16]


def hook_names(model) -> list[str]:
    """Every hook name the model exposes (the shared vocabulary of caches, SAEs and analyses)."""
    return sorted(model.hook_dict)


def check_hooks(model, hooks: list[str], error: type[Exception] = ModelSpecError) -> None:
    """Raise ``error`` naming unknown hooks, the model's hooks of the same kind, and every valid one."""
    valid = set(model.hook_dict)
    unknown = [hook for hook in hooks if hook not in valid]
    if unknown:
        close = sorted({name for name in valid for hook in unknown if name.split(".")[-1] == hook.split(".")[-1]})
        raise error(
            f"unknown hook name(s) {unknown}: the model has no hook '{unknown[0]}'; hooks of that kind: "
            f"{close or 'none'}; valid hooks for this model: {', '.join(hook_names(model))}"
        )
