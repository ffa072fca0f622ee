"""layerprune: an executable companion to "The Unreasonable Ineffectiveness of the Deeper Layers"."""

from importlib import import_module
from typing import Any

from . import _quiet  # noqa: F401  (before anything imports bitsandbytes)
from .adapters import ArchitectureAdapter, get_adapter, supported_model_types
from .data import corpus_blocks, load_documents, split_documents, tokenize_blocks
from .errors import (
    AssetError,
    InvalidInputError,
    LayerpruneError,
    ModelLoadError,
    UnsupportedArchitectureError,
)
from .identity import model_identity
from .lens import LogitLens, logit_lens
from .loss import HeldoutLoss, heldout_loss
from .models import load_model
from .provenance import Provenance
from .selection import STRATEGIES, BlockSelection, layers_for_fraction, select_block, select_blocks
from .similarity import DistanceProfile, profile_distances
from .surgery import prune

__version__ = "0.1.0"

# Modules that pull in heavy machinery (peft and bitsandbytes, lm-eval, plotting, notebooks) load on first use:
# `lp.plots`, `lp.heal`, ...; a chapter that never heals or evaluates never imports them.
_LAZY_MODULES = (
    "benchmarks",
    "book",
    "evaluation",
    "experiments",
    "generation",
    "healing",
    "merging",
    "pages",
    "plots",
    "tables",
    "tasks",
)
_LAZY_NAMES = {
    "CPU_DEFAULTS": "healing",
    "PAPER_SETTINGS": "healing",
    "HealResult": "healing",
    "HealSettings": "healing",
    "heal": "healing",
    "merge": "merging",
    "save_merged": "merging",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY_MODULES:
        return import_module(f".{name}", __name__)
    if name in _LAZY_NAMES:
        return getattr(import_module(f".{_LAZY_NAMES[name]}", __name__), name)
    raise AttributeError(f"module 'layerprune' has no attribute {name!r}")


__all__ = [
    "CPU_DEFAULTS",
    "PAPER_SETTINGS",
    "STRATEGIES",
    "ArchitectureAdapter",
    "AssetError",
    "BlockSelection",
    "DistanceProfile",
    "HealResult",
    "HealSettings",
    "HeldoutLoss",
    "InvalidInputError",
    "LayerpruneError",
    "LogitLens",
    "ModelLoadError",
    "Provenance",
    "UnsupportedArchitectureError",
    "corpus_blocks",
    "get_adapter",
    "heal",
    "heldout_loss",
    "layers_for_fraction",
    "load_documents",
    "load_model",
    "logit_lens",
    "merge",
    "model_identity",
    "profile_distances",
    "prune",
    "save_merged",
    "select_block",
    "select_blocks",
    "split_documents",
    "supported_model_types",
    "tokenize_blocks",
]
