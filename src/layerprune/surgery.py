"""Layer surgery: remove decoder layers so that the result is an ordinary model of the same class.

The pruned model renumbers its layers 0..L'-1 (the KV cache is indexed by `layer_idx`), carries a config whose
layer count and per-layer lists match, saves and reloads with `save_pretrained` / `from_pretrained`, and
records what was removed in `config.layerprune`.

A pruned copy costs almost no memory: it is a new module tree and config over the very tensors of its source
(`shared_copy`), so only the module shells are new. The source is never changed: nothing writes into a shared
tensor, and each copy has parameter objects of its own (its `requires_grad`, `.to()` and swapped modules stay its
own).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral
from typing import Any

import torch
from torch import nn

from .adapters import get_adapter, num_layers
from .errors import InvalidInputError, UnsupportedArchitectureError
from .selection import BlockSelection, block_for_fraction
from .similarity import DistanceProfile

# Config fields holding a layer-index boundary rather than one entry per layer (Qwen2: layers at or above it
# use sliding-window attention); pruning moves the boundary to where those layers end up.
_BOUNDARY_FIELDS = ("max_window_layers",)


def prune(model: nn.Module, layers: Iterable[int], *, inplace: bool = False, strategy: str | None = None) -> nn.Module:
    """The model without the decoder layers `layers` (indices in its current numbering).

    Unless `inplace`, a copy is pruned that shares its tensors with `model` (`shared_copy`): it costs almost no
    memory, and `model` stays as it was. `strategy` (e.g. "similarity") is recorded in `config.layerprune`:
    {"original_num_layers", "removed_layers" (original numbering), "strategy" (of the latest call), "steps"}.
    Models carrying PEFT adapters are refused: prune the base model, then heal it. A model placed by a device_map
    (over several devices, or offloaded to CPU or disk) is pruned where it lies, nothing is materialised: kept
    layers stay on their devices, offloaded ones still read their weights from the offload folder (which must
    outlive the copy), and `hf_device_map` follows the renumbering.
    """
    _refuse_unsupported(model)
    adapter = get_adapter(model)
    count = len(adapter.decoder_layers(model))
    removed = _check_layers(layers, count)
    keep = [i for i in range(count) if i not in removed]
    settings = _config_updates(model.config, keep, count, adapter.layer_fields)
    settings["layerprune"] = _record(model.config, keep, removed, count, strategy)
    target = model if inplace else shared_copy(model)
    _cut_layers(target, adapter.layers, keep)
    _renumber_device_map(target, adapter.layers, keep)
    for key, value in settings.items():
        setattr(target.config, key, value)
    return target


def shared_copy(model: nn.Module) -> nn.Module:
    """A copy of `model` (module tree, config, hooks) whose parameters and buffers share their storage with
    `model`'s: only the module shells are copied, so it costs almost no memory.

    Each parameter gets a new parameter object over the same storage, so that setting `requires_grad`, moving or
    casting the copy (`.to()` rebinds a parameter's data) and replacing its modules leave `model` as it was;
    tied weights stay tied. Writing into a tensor's values in place (`param.data[...] = ...`, `param.add_()`) would
    reach `model` too: what changes weights must give the copy new tensors. bitsandbytes weights share their
    quantized data, with a quantization state of their own; the weights of an accelerate placement read from the
    same offload maps; tensors a module keeps as plain attributes are shared too.
    """
    memo: dict[int, Any] = {}
    for param in model.parameters():
        memo[id(param)] = _shared_parameter(param, memo)
    for buffer in model.buffers():
        memo[id(buffer)] = buffer
    for module in model.modules():
        _share_plain_tensors(module, memo)
        _share_offload_maps(module, memo)
    copied = copy.deepcopy(model, memo)
    for module in copied.modules():  # a bitsandbytes 4-bit weight points back at its module
        weight = module._parameters.get("weight")
        if weight is not None and hasattr(weight, "module") and hasattr(weight, "quant_state"):
            weight.module = module
    return copied


def _shared_parameter(param: nn.Parameter, memo: dict[int, Any]) -> nn.Parameter:
    """A new parameter object over `param`'s storage (a bitsandbytes one with a copy of its small quantization
    state, which its CPU kernels rewrite in place); an unknown parameter class is deep-copied."""
    kind = type(param).__name__
    if type(param) is nn.Parameter:
        return nn.Parameter(param.data, requires_grad=param.requires_grad)
    if kind == "Params4bit":
        shared = copy.copy(param)  # the same data; quant_state, module replaced below and by shared_copy
        if param.quant_state is not None:
            shared.quant_state = memo[id(param.quant_state)] = copy.deepcopy(param.quant_state)
        return shared
    if kind == "Int8Params":
        for statistic in (param.CB, param.SCB):
            if statistic is not None:
                memo[id(statistic)] = statistic
        return type(param)(
            param.data,
            requires_grad=param.requires_grad,
            has_fp16_weights=param.has_fp16_weights,
            CB=param.CB,
            SCB=param.SCB,
        )
    return copy.deepcopy(param, memo)


def _share_plain_tensors(module: nn.Module, memo: dict[int, Any]) -> None:
    """Tensors kept as plain attributes of a module (a rotary `original_inv_freq`) or of an object it holds (the
    int8 weights in a bitsandbytes `MatmulLtState`) are shared, not copied."""
    for value in vars(module).values():
        if isinstance(value, nn.Module | nn.Parameter):
            continue
        inner = vars(value).values() if hasattr(value, "__dict__") and not isinstance(value, torch.Tensor) else ()
        for tensor in [value, *inner]:
            if isinstance(tensor, torch.Tensor) and not isinstance(tensor, nn.Parameter):
                memo.setdefault(id(tensor), tensor)


def _share_offload_maps(module: nn.Module, memo: dict[int, Any]) -> None:
    """The weights maps of accelerate's hooks (offloaded weights, read only) are shared, not copied."""
    hook = getattr(module, "_hf_hook", None)
    for candidate in [hook, *getattr(hook, "hooks", ())]:
        weights = getattr(candidate, "weights_map", None)
        if weights is not None:
            memo[id(weights)] = weights


@dataclass(frozen=True)
class PrunedModel:
    """A model with a fraction of its layers removed by a strategy; `selection` is None for fraction 0."""

    fraction: float
    strategy: str
    selection: BlockSelection | None
    model: nn.Module

    @property
    def layers(self) -> tuple[int, ...]:
        """The removed layers (original numbering); empty for the unpruned model."""
        return self.selection.layers if self.selection else ()

    @property
    def n(self) -> int:
        return len(self.layers)


def prune_fraction(
    model: nn.Module,
    profile: DistanceProfile | None,
    fraction: float,
    strategy: str = "similarity",
    *,
    seed: int = 0,
) -> PrunedModel:
    """fraction -> n -> block -> pruned model: the one path every sweep, table and benchmark takes. Fraction 0
    gives the model itself (not copied); without a profile only "last" and "random" can choose."""
    source = profile if profile is not None else num_layers(model)
    selection = block_for_fraction(source, fraction, strategy, seed=seed)
    pruned = prune(model, selection.layers, strategy=strategy) if selection else model
    return PrunedModel(fraction, strategy, selection, pruned)


def _refuse_unsupported(model: nn.Module) -> None:
    if getattr(model, "peft_config", None):
        raise InvalidInputError(
            "the model carries PEFT adapters (e.g. a PeftModel): prune the base model before healing it, "
            "or merge the adapters first (merge_and_unload())"
        )
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "is_heterogeneous", False):
        raise UnsupportedArchitectureError("models with a heterogeneous per_layer_config cannot be pruned")


def _check_layers(layers: Iterable[int], count: int) -> set[int]:
    """The set of layers to remove, after checking they are distinct, in range, and not all of them."""
    if isinstance(layers, str | bytes | Mapping) or not isinstance(layers, Iterable):
        raise InvalidInputError(f"layers must be a list of layer indices, got {layers!r}")
    items = list(layers)
    if not items:
        raise InvalidInputError("layers is empty: name at least one layer to remove")
    bad = [i for i in items if isinstance(i, bool) or not isinstance(i, Integral) or not 0 <= i < count]
    if bad:
        raise InvalidInputError(f"layer indices must be integers in 0..{count - 1}; got {bad}")
    if len(set(items)) != len(items):
        raise InvalidInputError(f"layers must not repeat, got {sorted(items)}")
    if len(items) == count:
        raise InvalidInputError(f"cannot remove all {count} layers; keep at least one")
    return {int(i) for i in items}


def _cut_layers(model: nn.Module, path: str, keep: list[int]) -> None:
    """Replace the decoder-layer list by the kept layers and renumber every `layer_idx` below them."""
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path)
    old = getattr(parent, name)
    kept = nn.ModuleList(old[i] for i in keep)
    for new_index, (old_index, layer) in enumerate(zip(keep, kept, strict=True)):
        for module in layer.modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                _fold_inverse_layer_scaling(module, old_index, new_index)
                module.layer_idx = new_index
    setattr(parent, name, kept)


def _renumber_device_map(model: nn.Module, path: str, keep: list[int]) -> None:
    """Keep accelerate's `hf_device_map` (module name -> device) true to the renumbered layers."""
    placement = getattr(model, "hf_device_map", None)
    if not placement:
        return
    prefix = f"{path}."
    index = {str(old): str(new) for new, old in enumerate(keep)}
    renamed = {}
    for name, device in placement.items():
        if not name.startswith(prefix):
            renamed[name] = device
            continue
        old, dot, rest = name[len(prefix) :].partition(".")
        if old in index:
            renamed[f"{prefix}{index[old]}{dot}{rest}"] = device
    model.hf_device_map = renamed


def _fold_inverse_layer_scaling(module: nn.Module, old: int, new: int) -> None:
    """GPT-2 with scale_attn_by_inverse_layer_idx divides attention scores by layer_idx + 1, recomputed from the
    renumbered index on reload: fold the change into the query weights so scores stay as they were. The folded
    weights are new tensors: the layer's old ones may be shared with the model it was pruned from."""
    if not getattr(module, "scale_attn_by_inverse_layer_idx", False) or old == new:
        return
    conv = module.c_attn
    if type(conv.weight) is not nn.Parameter:
        raise UnsupportedArchitectureError(
            "pruning a quantized GPT-2 with scale_attn_by_inverse_layer_idx is not supported; prune it unquantized"
        )
    factor = (new + 1) / (old + 1)
    width = module.embed_dim
    with torch.no_grad():
        weight, bias = conv.weight.detach().clone(), conv.bias.detach().clone()
        weight[:, :width] *= factor
        bias[:width] *= factor
    conv.weight = nn.Parameter(weight, requires_grad=conv.weight.requires_grad)
    conv.bias = nn.Parameter(bias, requires_grad=conv.bias.requires_grad)
    module.scaling *= (old + 1) / (new + 1)


def _config_updates(config: Any, keep: list[int], count: int, fields: Sequence[str]) -> dict[str, Any]:
    """The new layer count and every per-layer list cut to the kept layers: the adapter's `fields` and any other
    list of length L (token-id lists aside); boundary fields move with the layers they count."""
    settings = config.to_dict()
    for key in fields:
        value = settings.get(key)
        if isinstance(value, list) and len(value) != count:
            raise InvalidInputError(f"config.{key} has {len(value)} entries for {count} layers; fix the config first")
    per_layer = [
        key
        for key, value in sorted(settings.items())
        if isinstance(value, list) and len(value) == count and not _is_token_field(key)
    ]
    updates: dict[str, Any] = {key: [settings[key][i] for i in keep] for key in per_layer}
    for key in _BOUNDARY_FIELDS:
        boundary = settings.get(key)
        if isinstance(boundary, int) and boundary < count:
            updates[key] = sum(1 for i in keep if i < boundary)
    updates["num_hidden_layers"] = len(keep)
    return updates


def _is_token_field(key: str) -> bool:
    return key == "architectures" or key.endswith(("_token_id", "_token_ids"))


def _record(config: Any, keep: list[int], removed: set[int], count: int, strategy: str | None) -> dict[str, Any]:
    """config.layerprune with this call appended, its indices translated back to the original numbering."""
    history = copy.deepcopy(getattr(config, "layerprune", None) or {})
    original = history.get("original_num_layers", count)
    previous = sorted(history.get("removed_layers", []))
    survivors = [i for i in range(original) if i not in set(previous)]
    removed_now = [survivors[i] for i in sorted(removed)]
    step = {
        "removed_layers": sorted(removed),
        "removed_original_layers": removed_now,
        "num_layers_before": count,
        "num_layers_after": len(keep),
        "strategy": strategy,
    }
    return {
        "original_num_layers": original,
        "removed_layers": sorted(previous + removed_now),
        "strategy": strategy,
        "steps": [*history.get("steps", []), step],
    }
