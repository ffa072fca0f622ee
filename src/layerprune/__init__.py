"""layerprune: an executable companion to "The Unreasonable Ineffectiveness of the Deeper Layers"."""

from . import _quiet  # noqa: F401  (before anything imports bitsandbytes)
from ._lazy import lazy_attributes
from .adapters import ArchitectureAdapter, get_adapter, supported_model_types
from .cache import model_identity
from .data import corpus_blocks, load_documents, split_documents, text_blocks, tokenize_blocks
from .errors import (
    AssetError,
    InvalidInputError,
    LayerpruneError,
    ModelLoadError,
    UnsupportedArchitectureError,
)
from .lens import LogitLens, logit_lens
from .loss import HeldoutLoss, heldout_loss
from .models import load_model
from .selection import (
    STRATEGIES,
    BlockSelection,
    Strategy,
    block_for_fraction,
    layers_for_fraction,
    register_strategy,
    select_block,
)
from .similarity import DistanceProfile, profile_distances
from .surgery import PrunedModel, prune, prune_fraction

__version__ = "0.1.0"

from .speed.flops import count_if_asked  # the book's runner asks a chapter's kernel to count FLOPs

count_if_asked()

# Subpackages and modules that pull in heavy machinery (peft, lm-eval, plotting, notebooks) load on first use:
# `lp.healing`, `lp.evaluation`, `lp.study`, `lp.book`, `lp.speed`; a chapter that never heals or evaluates never
# imports them.
__getattr__ = lazy_attributes(
    __name__,
    ("book", "cache", "course", "evaluation", "healing", "speed", "study"),
    {
        "CPU_DEFAULTS": "healing",
        "PAPER_SETTINGS": "healing",
        "HealResult": "healing",
        "HealSettings": "healing",
        "heal": "healing",
        "merge": "healing",
        "save_merged": "healing",
    },
)


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
    "PrunedModel",
    "Strategy",
    "UnsupportedArchitectureError",
    "block_for_fraction",
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
    "prune_fraction",
    "register_strategy",
    "save_merged",
    "select_block",
    "split_documents",
    "supported_model_types",
    "text_blocks",
    "tokenize_blocks",
]
