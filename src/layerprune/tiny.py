"""Tiny random models of every supported family, with a byte-level tokenizer: for tests and smoke runs."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    MistralConfig,
    Phi3Config,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen3Config,
)
from transformers.models.gemma3 import Gemma3TextConfig

from .cache import atomic_dir, cache_path, file_lock, is_complete, write_manifest
from .errors import InvalidInputError

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>")
VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)
PAD_ID, BOS_ID, EOS_ID = 256, 257, 258


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer (256 byte tokens + pad, bos, eos) that needs no files."""
    vocab = {chr(code): byte for byte, code in enumerate(_byte_level_alphabet())}
    vocab |= {token: 256 + i for i, token in enumerate(SPECIAL_TOKENS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            pre_tokenizers.Split(pattern="", behavior="isolated"),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<pad>"
    )


def _byte_level_alphabet() -> list[int]:
    """The 256 printable code points that byte-level pre-tokenization maps bytes 0..255 to, in byte order."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    mapping = {b: b for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = 256 + extra
            extra += 1
    return [mapping[b] for b in range(256)]


def tiny_config(family: str, num_layers: int = 6, hidden: int = 32) -> PretrainedConfig:
    """A small config of a supported `model_type` (e.g. "llama", "gemma3_text", "gpt2")."""
    ids = {"vocab_size": VOCAB_SIZE, "bos_token_id": BOS_ID, "eos_token_id": EOS_ID, "pad_token_id": PAD_ID}
    decoder = dict(
        num_hidden_layers=num_layers,
        hidden_size=hidden,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=2 * hidden,
        head_dim=hidden // 4,
        max_position_embeddings=512,
        **ids,
    )
    if family == "gpt2":
        return GPT2Config(n_layer=num_layers, n_embd=hidden, n_head=4, n_positions=512, **ids)
    if family == "gpt_neox":
        return GPTNeoXConfig(
            num_hidden_layers=num_layers,
            hidden_size=hidden,
            num_attention_heads=4,
            intermediate_size=2 * hidden,
            max_position_embeddings=512,
            **ids,
        )
    if family == "gemma3_text":
        pattern = ["sliding_attention", "sliding_attention", "full_attention"]
        return Gemma3TextConfig(**decoder, sliding_window=16, layer_types=[pattern[i % 3] for i in range(num_layers)])
    if family == "qwen2":
        return Qwen2Config(**decoder, use_sliding_window=True, sliding_window=16, max_window_layers=num_layers // 2)
    if family == "mistral":
        return MistralConfig(**decoder, sliding_window=16)
    classes = {"llama": LlamaConfig, "qwen3": Qwen3Config, "phi3": Phi3Config}
    if family not in classes:
        raise InvalidInputError(f"no tiny config for {family!r}; families: {', '.join(TINY_FAMILIES)}")
    return classes[family](**decoder)


TINY_FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gemma3_text", "phi3", "gpt2", "gpt_neox")


def tiny_model(family: str = "llama", num_layers: int = 6, hidden: int = 32, seed: int = 0) -> PreTrainedModel:
    """A randomly initialised (seeded) float32 model of a supported family, in eval mode."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(family, num_layers, hidden), dtype=torch.float32)
    return model.eval()


TINY_PREFIX = "tiny-"


def tiny_model_dir(family: str, num_layers: int = 8, hidden: int = 64) -> Path:
    """A saved tiny random model with the byte tokenizer, in the cache (loadable as ``"tiny-<family>"``).

    It is saved atomically with a manifest of file sizes; one that is incomplete or damaged is saved again.
    """
    if family not in TINY_FAMILIES:
        raise InvalidInputError(f"no tiny model {TINY_PREFIX}{family}; available: {', '.join(TINY_NAMES)}")
    target = cache_path("models", f"{TINY_PREFIX}{family}-{num_layers}x{hidden}")
    with file_lock(target):
        if not is_complete(target):
            with atomic_dir(target) as tmp:
                tiny_model(family, num_layers, hidden).save_pretrained(tmp)
                byte_tokenizer().save_pretrained(tmp)
                write_manifest(tmp, {"name": f"{TINY_PREFIX}{family}", "layers": num_layers, "hidden": hidden})
    return target


TINY_NAMES = tuple(f"{TINY_PREFIX}{family}" for family in TINY_FAMILIES)
