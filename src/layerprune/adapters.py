"""Architecture adapters: where each model family keeps its decoder layers, final norm and FFN; and what any
loaded model is (its layer count, the device its inputs go to, the name it was loaded from)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .errors import UnsupportedArchitectureError


@dataclass(frozen=True)
class ArchitectureAdapter:
    """How to find the parts of one family of decoder-only models.

    `layers` and `final_norm` are attribute paths from the *ForCausalLM module; `ffn` are the module-name
    suffixes of the feed-forward projections (the paper's LoRA targets); `layer_fields` are config fields
    holding one entry per layer, which pruning must cut.
    """

    family: str
    model_types: tuple[str, ...]
    layers: str
    final_norm: str
    ffn: tuple[str, ...]
    layer_fields: tuple[str, ...] = ("layer_types",)

    def decoder_layers(self, model: nn.Module) -> nn.ModuleList:
        return _resolve(model, self.layers)

    def norm(self, model: nn.Module) -> nn.Module:
        return _resolve(model, self.final_norm)


_GATED_FFN = ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")

ADAPTERS: tuple[ArchitectureAdapter, ...] = (
    ArchitectureAdapter("Llama", ("llama",), "model.layers", "model.norm", _GATED_FFN),
    ArchitectureAdapter("Mistral", ("mistral",), "model.layers", "model.norm", _GATED_FFN),
    ArchitectureAdapter("Qwen2", ("qwen2",), "model.layers", "model.norm", _GATED_FFN),
    ArchitectureAdapter("Qwen3", ("qwen3",), "model.layers", "model.norm", _GATED_FFN),
    ArchitectureAdapter("Gemma3", ("gemma3_text",), "model.layers", "model.norm", _GATED_FFN),
    ArchitectureAdapter("Phi-3", ("phi3",), "model.layers", "model.norm", ("mlp.gate_up_proj", "mlp.down_proj")),
    ArchitectureAdapter("GPT-2", ("gpt2",), "transformer.h", "transformer.ln_f", ("mlp.c_fc", "mlp.c_proj")),
    ArchitectureAdapter(
        "GPT-NeoX",
        ("gpt_neox",),
        "gpt_neox.layers",
        "gpt_neox.final_layer_norm",
        ("mlp.dense_h_to_4h", "mlp.dense_4h_to_h"),
    ),
)

_BY_MODEL_TYPE = {model_type: adapter for adapter in ADAPTERS for model_type in adapter.model_types}


def supported_model_types() -> list[str]:
    """The `config.model_type` values layerprune knows."""
    return sorted(_BY_MODEL_TYPE)


def adapter_for_model_type(model_type: str) -> ArchitectureAdapter:
    """The adapter of a `config.model_type`, or a clear error naming the supported ones."""
    try:
        return _BY_MODEL_TYPE[model_type]
    except KeyError:
        raise UnsupportedArchitectureError(
            f"architecture {model_type!r} is not supported; supported model types: "
            f"{', '.join(supported_model_types())}. To add one, append an ArchitectureAdapter to "
            "layerprune.adapters.ADAPTERS naming its decoder-layer list, final norm and FFN projections."
        ) from None


def get_adapter(model: nn.Module) -> ArchitectureAdapter:
    """The adapter for a loaded model (a PeftModel is looked through to its base model)."""
    config = getattr(model, "config", None)
    if config is None:
        raise UnsupportedArchitectureError(f"{type(model).__name__} has no `config`; expected a transformers model")
    return adapter_for_model_type(config.model_type)


def unwrap(model: nn.Module) -> nn.Module:
    """The transformers model inside a PeftModel (or the model itself)."""
    base = getattr(model, "get_base_model", None)
    return base() if callable(base) else model


def _resolve(model: nn.Module, path: str) -> nn.Module:
    module = unwrap(model)
    for part in path.split("."):
        module = getattr(module, part)
    return module


def num_layers(model: nn.Module) -> int:
    """The number of decoder layers of a loaded model."""
    return len(get_adapter(model).decoder_layers(model))


def model_device(model: nn.Module) -> torch.device:
    """The device inputs go to: where the input embeddings run (accelerate's execution device when a device_map
    spread the model over devices or offloaded it), else the device of the model's first parameter."""
    get_embeddings = getattr(model, "get_input_embeddings", None)
    embeddings = get_embeddings() if callable(get_embeddings) else None
    execution = getattr(getattr(embeddings, "_hf_hook", None), "execution_device", None)
    if execution is not None:
        return torch.device(execution)
    return next(model.parameters()).device


def model_name(model: nn.Module) -> str:
    """The name or directory the model was loaded from ("" if unknown)."""
    return str(getattr(model.config, "_name_or_path", "") or "")
