"""Model families: a Hugging Face checkpoint's config turned into a TransformerLens config.

TransformerLens 3.x converts most families from the checkpoint's ``config.json``, but picks some
(Llama, Gemma) by the *model name*, so a local folder whose path says ``llama`` loses its config and
Gemma 2/3 are known only as Google's released sizes. ``tl_config_dict`` gives TransformerLens a
neutral name, repairs GPT-2 configs without ``n_ctx``, and converts Gemma 2/3 from their config.
"""

from __future__ import annotations

import copy
import tempfile
from typing import Any

import torch

from interp.store.errors import InputError

# architecture -> family name; the families whose logits tests/interp/test_model_families.py checks
TESTED_FAMILIES = {
    "GPT2LMHeadModel": "GPT-2",
    "GPTNeoXForCausalLM": "GPT-NeoX (Pythia)",
    "LlamaForCausalLM": "Llama",
    "MistralForCausalLM": "Mistral",
    "Qwen2ForCausalLM": "Qwen 2",
    "Qwen3ForCausalLM": "Qwen 3",
    "Gemma2ForCausalLM": "Gemma 2",
    "Gemma3ForCausalLM": "Gemma 3 (text)",
}


# architectures TransformerLens 3.x also converts from config.json, not tested here (load_model checks their logits)
UNTESTED_FAMILIES = ("GPTNeoForCausalLM", "GPTJForCausalLM", "OPTForCausalLM", "BloomForCausalLM", "PhiForCausalLM",
                     "Phi3ForCausalLM", "MixtralForCausalLM", "GptOssForCausalLM", "ApertusForCausalLM",
                     "Olmo3ForCausalLM", "OlmoeForCausalLM")
# log-prob agreement with transformers a loaded checkpoint must reach, by dtype (half precision rounds more)
LOGPROB_TOLERANCE = {torch.float32: 1e-3, torch.float16: 0.1, torch.bfloat16: 0.25}


class ModelSpecError(InputError):
    """A model spec that cannot be loaded, with what to do about it."""


class UnsupportedFamilyError(ModelSpecError):
    """A checkpoint whose architecture TransformerLens 3.x cannot convert."""


def _unsupported(architecture: str) -> UnsupportedFamilyError:
    tested = ", ".join(f"{name} ({arch})" for arch, name in TESTED_FAMILIES.items())
    return UnsupportedFamilyError(
        f"TransformerLens 3.x cannot load a '{architecture}' checkpoint; supported families: {tested}; "
        f"also converted by TransformerLens, untested here: {', '.join(UNTESTED_FAMILIES)}"
    )


def architecture_of(hf_config) -> str:
    """The config's model class, or transformers' causal-LM class of its model type (a config saved alone
    names no architectures)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    named = getattr(hf_config, "architectures", None)
    return named[0] if named else MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(hf_config.model_type, hf_config.model_type)


def family(hf_config) -> str:
    """The family name of a checkpoint's config (its architecture if untested); one-line error if unsupported."""
    architecture = architecture_of(hf_config)
    if architecture in TESTED_FAMILIES:
        return TESTED_FAMILIES[architecture]
    if architecture in UNTESTED_FAMILIES:
        return architecture
    raise _unsupported(architecture)


def _rope_theta(hf_config, layer_type: str | None = None, default: float = 10000.0) -> float:
    """RoPE base from transformers 5 ``rope_parameters`` (per layer type for Gemma 3) or the older fields."""
    params = getattr(hf_config, "rope_parameters", None) or {}
    if layer_type is not None and isinstance(params.get(layer_type), dict):
        params = params[layer_type]
    if "rope_theta" in params:
        return float(params["rope_theta"])
    if layer_type == "sliding_attention" and getattr(hf_config, "rope_local_base_freq", None):
        return float(hf_config.rope_local_base_freq)
    return float(getattr(hf_config, "rope_theta", None) or default)


def _rope_scaling(hf_config, layer_type: str) -> float:
    params = getattr(hf_config, "rope_parameters", None) or getattr(hf_config, "rope_scaling", None) or {}
    if isinstance(params.get(layer_type), dict):
        params = params[layer_type]
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type in (None, "default"):
        return 1.0
    if rope_type == "linear":
        return float(params["factor"])
    raise ModelSpecError(f"this Gemma checkpoint uses '{rope_type}' RoPE scaling, which TransformerLens 3.x does not "
                     "implement; only default and linear scaling load")


def gemma_config_dict(hf_config) -> dict[str, Any]:
    """Gemma 2 / Gemma 3 (text) from their config (TransformerLens 3.x knows only Google's released sizes)."""
    gemma3 = hf_config.model_type == "gemma3_text"
    n_layers = hf_config.num_hidden_layers
    layer_types = getattr(hf_config, "layer_types", None) or ["sliding_attention", "full_attention"] * (n_layers // 2)
    cfg = {
        "d_model": hf_config.hidden_size,
        "d_head": hf_config.head_dim,
        "n_heads": hf_config.num_attention_heads,
        "n_key_value_heads": hf_config.num_key_value_heads,
        "d_mlp": hf_config.intermediate_size,
        "n_layers": n_layers,
        "n_ctx": hf_config.max_position_embeddings,
        "eps": hf_config.rms_norm_eps,
        "d_vocab": hf_config.vocab_size,
        "act_fn": getattr(hf_config, "hidden_activation", None) or hf_config.hidden_act,
        "initializer_range": hf_config.initializer_range,
        "normalization_type": "RMS",
        "positional_embedding_type": "rotary",
        "rotary_base": _rope_theta(hf_config, "full_attention"),
        "use_attn_scale": True,
        "attn_scale": float(hf_config.query_pre_attn_scalar) ** 0.5,
        "window_size": hf_config.sliding_window,
        "use_local_attn": hf_config.sliding_window is not None,
        "attn_types": ["local" if kind == "sliding_attention" else "global" for kind in layer_types],
        "gated_mlp": True,
        "final_rms": True,
        "use_normalization_before_and_after": True,
        "original_architecture": hf_config.architectures[0],
    }
    for name, key in (("attn_logit_softcapping", "attn_scores_soft_cap"),
                      ("final_logit_softcapping", "output_logits_soft_cap")):
        if getattr(hf_config, name, None):
            cfg[key] = float(getattr(hf_config, name))
    if gemma3:
        cfg["use_qk_norm"] = True
        cfg["rotary_base_local"] = _rope_theta(hf_config, "sliding_attention")
        cfg["rotary_scaling_factor"] = _rope_scaling(hf_config, "full_attention")
        _rope_scaling(hf_config, "sliding_attention")
    return cfg


def _prepared_hf_config(hf_config):
    """Fill fields TransformerLens reads but some saved configs lack (architectures, GPT-2's ``n_ctx``)."""
    hf_config = copy.deepcopy(hf_config)
    hf_config.architectures = [architecture_of(hf_config)]
    if hf_config.model_type == "gpt2" and "n_ctx" not in hf_config.to_dict():
        hf_config.n_ctx = hf_config.n_positions
    return hf_config


def tl_config_dict(hf_config) -> dict[str, Any]:
    """The TransformerLens config dict of a checkpoint's ``PretrainedConfig`` (before dtype/device/folding)."""
    from transformer_lens import loading_from_pretrained as loading

    family(hf_config)
    architecture = architecture_of(hf_config)
    if architecture in ("Gemma2ForCausalLM", "Gemma3ForCausalLM"):
        return gemma_config_dict(_prepared_hf_config(hf_config))
    with tempfile.TemporaryDirectory(prefix="checkpoint-config-") as neutral:
        # TransformerLens picks Llama and Gemma configs by name: a name without those words makes it read config.json
        _prepared_hf_config(hf_config).save_pretrained(neutral)
        try:
            cfg = loading.convert_hf_model_config(neutral)
        except NotImplementedError as error:
            raise _unsupported(architecture) from error
    if architecture == "GPT2LMHeadModel" and getattr(hf_config, "n_inner", None):
        cfg["d_mlp"] = hf_config.n_inner  # TransformerLens assumes 4 * d_model
    return cfg


def tl_config(hf_config, name: str, fold_ln: bool, device: str, dtype):
    """The ``HookedTransformerConfig`` TransformerLens' ``get_pretrained_model_config`` would build, for any name."""
    from transformer_lens import HookedTransformerConfig
    from transformer_lens.utilities.architectures import POST_NORM_ARCHITECTURES

    cfg = tl_config_dict(hf_config)
    cfg.update(model_name=name, tokenizer_name=name, init_weights=False, from_checkpoint=False,
               device=device, dtype=dtype, n_devices=1, d_vocab=hf_config.vocab_size)
    cfg.setdefault("default_prepend_bos", True)
    if fold_ln and cfg["original_architecture"] not in POST_NORM_ARCHITECTURES:
        cfg["normalization_type"] = {"LN": "LNPre", "RMS": "RMSPre"}.get(cfg["normalization_type"],
                                                                         cfg["normalization_type"])
    return HookedTransformerConfig.from_dict(cfg)


def processing_flags(cfg, fold_ln: bool) -> dict[str, bool]:
    """The weight processing ``HookedTransformer.from_pretrained`` would apply with ``fold_ln`` for this config.

    Its guards, kept: shortformer and post-norm blocks cannot fold, and a logit softcap is not invariant
    under centring the unembedding (centring it there changes the log-probs).
    """
    from transformer_lens.utilities.activation_functions import softcap_enabled
    from transformer_lens.utilities.architectures import POST_NORM_ARCHITECTURES

    shortformer = cfg.positional_embedding_type == "shortformer"
    post_norm = cfg.original_architecture in POST_NORM_ARCHITECTURES
    fold = fold_ln and not shortformer and not post_norm
    return {"fold_ln": fold, "center_writing_weights": fold,
            "center_unembed": fold_ln and not shortformer and not softcap_enabled(cfg.output_logits_soft_cap)}


def reference_logprobs(hf_model, n_tokens: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded random tokens and transformers' log-probs on them (on the model's device, before it is freed)."""
    generator = torch.Generator().manual_seed(0)
    n_ctx = getattr(hf_model.config, "max_position_embeddings", None) or getattr(hf_model.config, "n_positions", 16)
    tokens = torch.randint(0, hf_model.config.vocab_size, (1, min(n_tokens, n_ctx)), generator=generator)
    with torch.no_grad():
        return tokens, hf_model(tokens.to(hf_model.device)).logits.float().log_softmax(-1).cpu()


def check_matches_transformers(model, reference: tuple[torch.Tensor, torch.Tensor], where, family_name: str) -> float:
    """Max |log-prob difference| between the converted model and transformers' ``reference``; raise if too big.

    Log-probs, not logits: TransformerLens' weight processing (centring the unembedding) shifts logits by a
    constant per position. Run once per load, so a conversion that is silently wrong for a config is caught;
    the reference is taken first, so the two models never share the device.
    """
    tokens, theirs = reference
    with torch.no_grad():
        ours = model(tokens.to(model.cfg.device)).float().log_softmax(-1).cpu()
    difference = float((ours - theirs).abs().max())
    tolerance = LOGPROB_TOLERANCE.get(model.cfg.dtype, 1e-3)
    if not difference <= tolerance:
        raise ModelSpecError(
            f"{where}: the TransformerLens conversion of this {family_name} checkpoint disagrees with "
            f"transformers (max log-prob difference {difference:.3g} > {tolerance:g}); this config uses an option "
            "TransformerLens 3.x does not convert; load it with transformers instead or report the config"
        )
    return difference
