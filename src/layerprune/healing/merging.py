"""Merging a healed adapter into a full-precision model, and saving that model with a model card."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from peft.tuners.lora import LoraLayer
from peft.tuners.tuners_utils import BaseTunerLayer
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase
from transformers.initialization import no_init_weights
from transformers.pytorch_utils import Conv1D

from ..assets import EMBEDDED_MODELS
from ..cache import atomic_dir
from ..errors import InvalidInputError
from .training import HealResult


def merge(healed: HealResult | PeftModel, *, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """A plain transformers model with the healed (pruned) architecture: base weights plus each LoRA update.

    A 4-bit or 8-bit base is dequantized first: those are the weights the adapter was trained against, so the
    merged model computes what the healed adapter model computes, up to float rounding (and, for 8-bit, up to
    the activation quantization of LLM.int8). The sum is formed in float32, then cast to `dtype`; the model is
    on the CPU.
    """
    peft_model = healed.model if isinstance(healed, HealResult) else healed
    if not isinstance(peft_model, PeftModel):
        raise InvalidInputError(f"merge needs a HealResult or a PeftModel, got {type(healed).__name__}")
    base = peft_model.get_base_model()
    quantization = _quantization(base)
    merged = _full_precision_copy(base)
    _add_lora_updates(base, merged, peft_model.active_adapter)
    layerprune = copy.deepcopy(getattr(merged.config, "layerprune", None) or {})
    healing = layerprune.setdefault("healing", {})
    healing["merged"] = {"base_weights": f"dequantized {quantization}" if quantization else "full precision"}
    merged.config.layerprune = layerprune
    return merged.to(dtype).eval()


def save_merged(
    model: PreTrainedModel, directory: str | Path, tokenizer: PreTrainedTokenizerBase | None = None
) -> Path:
    """Save a merged model (and tokenizer) with a README.md model card, atomically; plain transformers reloads it."""
    final = Path(directory)
    with atomic_dir(final) as tmp:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        (tmp / "README.md").write_text(model_card(model.config))
    return final


def model_card(config: Any) -> str:
    """A README.md saying which layers were removed, by which strategy, and how the model was healed."""
    record = getattr(config, "layerprune", None) or {}
    lines = [
        "# A pruned and healed model (layerprune)",
        "",
        f"Architecture: `{config.model_type}`, {config.num_hidden_layers} decoder layers.",
        "",
        "## Layers removed",
        "",
        _pruning_text(record),
        "",
        "## Healing",
        "",
        _healing_text(record.get("healing")),
        "",
        "Method: Gromov et al., *The Unreasonable Ineffectiveness of the Deeper Layers* (ICLR 2025, "
        "arXiv:2403.17887): drop a block of layers, then heal with QLoRA on the FFN projections.",
        "",
        *_base_model_text(config),
    ]
    return "\n".join(lines)


def _base_model_text(config: Any) -> list[str]:
    """Attribution and license of the embedded model this one derives from (nothing for other models)."""
    spec = EMBEDDED_MODELS.get(str(getattr(config, "name_or_path", "") or ""))
    if spec is None:
        return []
    return ["## Base model", "", f"Derived from {spec.description}.", "", *([spec.notice] if spec.notice else [])]


def _pruning_text(record: dict[str, Any]) -> str:
    if "removed_layers" not in record:
        return "No pruning is recorded in `config.layerprune`."
    removed = record["removed_layers"]
    return (
        f"Removed {len(removed)} of {record.get('original_num_layers', '?')} layers: {removed} "
        f"(strategy: {record.get('strategy', 'not recorded')})."
    )


def _healing_text(healing: dict[str, Any] | None) -> str:
    if not healing or "rank" not in healing:
        return "Not healed."
    text = (
        f"{healing['method']} ({healing['quantization']} base): LoRA rank {healing['rank']}, alpha "
        f"{healing['alpha']:g}, dropout {healing['dropout']:g}, on {', '.join(healing['targets'])}. "
        f"{healing['optimizer']}, learning rate {healing['lr']:g}, {healing['schedule']} schedule with "
        f"{healing['warmup']} warm-up steps; {healing['steps']} steps of {healing['blocks_per_step']} blocks of "
        f"{healing['block_size']} tokens ({healing['tokens']:,} tokens) from {healing['data']}; "
        f"seed {healing['seed']}, {healing['num_processes']} process(es)."
    )
    if "heldout_before" in healing:
        before, after = healing["heldout_before"], healing["heldout_after"]
        text += (
            f" Held-out loss {before['loss']:.4f} -> {after['loss']:.4f} nats/token "
            f"(normalised by log V: {before['normalized']:.4f} -> {after['normalized']:.4f})."
        )
    if "merged" in healing:
        text += f" The adapter was merged into the {healing['merged']['base_weights']} base weights."
    return text


def _quantization(model: PreTrainedModel) -> str | None:
    if getattr(model, "is_loaded_in_4bit", False):
        return "4bit"
    if getattr(model, "is_loaded_in_8bit", False):
        return "8bit"
    return None


def _full_precision_copy(base: PreTrainedModel) -> PreTrainedModel:
    """A float32 model of the same configuration (quantization dropped) holding the base's dequantized weights, in
    tensors of its own (the base's may be shared with the model it was pruned from: they are only read). Each
    weight is copied in as it is read, so no second full copy is held on the way."""
    config = copy.deepcopy(base.config)
    config.__dict__.pop("quantization_config", None)
    with no_init_weights():
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for key, tensor in plain.state_dict(keep_vars=True).items():
            tensor.copy_(_float32_tensor(base, plain, key))
    return plain


def _float32_tensor(base: PreTrainedModel, plain: PreTrainedModel, key: str) -> torch.Tensor:
    module_name, _, name = key.rpartition(".")
    module = base.get_submodule(module_name)
    if isinstance(module, BaseTunerLayer):
        module = module.get_base_layer()
    tensor = getattr(module, name)
    if name == "weight" and type(tensor).__name__ in ("Params4bit", "Int8Params"):
        tensor = _dequantized_weight(module, module_name)
        if isinstance(plain.get_submodule(module_name), Conv1D):
            tensor = tensor.T
    return tensor.detach().to("cpu", torch.float32 if tensor.is_floating_point() else tensor.dtype)


def _dequantized_weight(module: torch.nn.Module, name: str) -> torch.Tensor:
    """The float32 weight a bitsandbytes 4-bit or 8-bit layer computes with (the layer is left untouched)."""
    import bitsandbytes as bnb

    weight = module.weight
    if type(weight).__name__ == "Int8Params":
        scales = weight.SCB if weight.SCB is not None else module.state.SCB
        return bnb.functional.int8_vectorwise_dequant(weight.data, scales)
    if getattr(weight.quant_state, "packing_format_for_cpu", False):
        raise InvalidInputError(
            f"{name} holds 4-bit weights repacked for inference on this CPU; merge the model that "
            "layerprune.heal returned (it keeps them in the trained format)"
        )
    return bnb.functional.dequantize_4bit(weight.data, weight.quant_state).float()


def _add_lora_updates(base: PreTrainedModel, plain: PreTrainedModel, adapter: str) -> None:
    """Add scaling * B @ A of every LoRA layer of `base` to the matching weight of `plain`."""
    with torch.no_grad():
        for name, module in base.named_modules():
            if isinstance(module, LoraLayer) and adapter in module.lora_A:
                target = plain.get_submodule(name)
                delta = module.get_delta_weight(adapter).detach().to("cpu", torch.float32)
                if isinstance(target, Conv1D) != bool(module.fan_in_fan_out):
                    delta = delta.T
                target.weight += delta
