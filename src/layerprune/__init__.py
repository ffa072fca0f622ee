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
from .healing import CPU_DEFAULTS, PAPER_SETTINGS, HealResult, HealSettings, heal
from .identity import model_identity
from .lens import LogitLens, logit_lens
from .loss import HeldoutLoss, heldout_loss
from .merging import merge, save_merged
from .models import load_model
from .provenance import Provenance
from .selection import STRATEGIES, BlockSelection, layers_for_fraction, select_block, select_blocks
from .similarity import DistanceProfile, profile_distances
from .surgery import prune

__version__ = "0.1.0"

# Modules that pull in plotting or notebook machinery load on first use: `lp.plots`, `lp.tables`, ...
_LAZY_MODULES = ("book", "evaluation", "experiments", "generation", "pages", "plots", "tables", "tasks")


def __getattr__(name: str) -> Any:
    if name in _LAZY_MODULES:
        return import_module(f".{name}", __name__)
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
