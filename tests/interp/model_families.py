"""Tiny random checkpoints of each model family, built with transformers' own config classes.

Two layers, d_model 64, the demo tokenizer, ``save_pretrained``: what a researcher's checkpoint folder
holds, small enough to build in well under a second. ``initializer_range`` is raised above the usual 0.02
so attention patterns are sharp and a wrong window, softcap or scale shows in the logits.
"""

from __future__ import annotations

from pathlib import Path

import torch

SIZE = {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 96,
        "max_position_embeddings": 128, "initializer_range": 0.2}


def _configs(vocab_size: int) -> dict:
    import transformers as hf

    size = dict(SIZE, vocab_size=vocab_size)
    gqa = dict(size, num_key_value_heads=2)
    gemma = dict(gqa, head_dim=16, sliding_window=6, query_pre_attn_scalar=24,
                 layer_types=["sliding_attention", "full_attention"])
    gpt2 = {"n_layer": 2, "n_embd": 64, "n_head": 4, "n_positions": 128, "vocab_size": vocab_size,
            "initializer_range": 0.2}
    return {
        "gpt2": (hf.GPT2LMHeadModel, hf.GPT2Config(**gpt2)),  # n_positions only, as transformers 5 saves it
        "gpt2-n_ctx-n_inner": (hf.GPT2LMHeadModel, hf.GPT2Config(**gpt2, n_ctx=128, n_inner=96)),
        "gpt-neox": (hf.GPTNeoXForCausalLM, hf.GPTNeoXConfig(**size, rotary_pct=0.5)),
        "llama": (hf.LlamaForCausalLM, hf.LlamaConfig(**gqa)),
        "gemma-2": (hf.Gemma2ForCausalLM, hf.Gemma2Config(**gemma)),
        "gemma-3": (hf.Gemma3ForCausalLM, hf.Gemma3TextConfig(**gemma)),
        "qwen-2": (hf.Qwen2ForCausalLM, hf.Qwen2Config(**gqa)),
        "qwen-3": (hf.Qwen3ForCausalLM, hf.Qwen3Config(**gqa, head_dim=16)),
        "mistral": (hf.MistralForCausalLM, hf.MistralConfig(**gqa, sliding_window=None)),
    }


FAMILIES = ("gpt2", "gpt2-n_ctx-n_inner", "gpt-neox", "llama", "gemma-2", "gemma-3", "qwen-2", "qwen-3", "mistral")


def save_checkpoint(name: str, folder: Path, seed: int = 0):
    """Write family ``name``'s tiny random checkpoint (weights, config, demo tokenizer) to ``folder``."""
    from interp.models.loading import demo_tokenizer

    tokenizer = demo_tokenizer()
    model_class, config = _configs(len(tokenizer))[name]
    torch.manual_seed(seed)
    model = model_class(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model
