"""Healing a pruned model: budgets (`settings`), the QLoRA training loop (`training`), data-parallel runs
(`parallel`, `distributed`), checkpoints, merging and the `heal` command. peft loads on first use."""

from .._lazy import lazy_attributes

_NAMES = {
    "CPU_DEFAULTS": "settings",
    "PAPER_SETTINGS": "settings",
    "HealSettings": "settings",
    "Recipe": "settings",
    "HealResult": "training",
    "heal": "training",
    "load_base": "training",
    "lora_targets": "training",
    "linear_suffixes": "training",
    "Processes": "parallel",
    "BlockSampler": "parallel",
    "merge": "merging",
    "save_merged": "merging",
    "model_card": "merging",
}
_MODULES = ("checkpoints", "command", "distributed", "merging", "parallel", "settings", "training")
__getattr__ = lazy_attributes(__name__, _MODULES, _NAMES)
__all__ = sorted(_NAMES)
