"""layerprune: an executable companion to "The Unreasonable Ineffectiveness of the Deeper Layers"."""

from .adapters import ArchitectureAdapter, get_adapter, supported_model_types
from .data import corpus_blocks, load_documents, split_documents, tokenize_blocks
from .errors import (
    AssetError,
    InvalidInputError,
    LayerpruneError,
    ModelLoadError,
    UnsupportedArchitectureError,
)
from .models import load_model

__version__ = "0.1.0"

__all__ = [
    "ArchitectureAdapter",
    "AssetError",
    "InvalidInputError",
    "LayerpruneError",
    "ModelLoadError",
    "UnsupportedArchitectureError",
    "corpus_blocks",
    "get_adapter",
    "load_documents",
    "load_model",
    "split_documents",
    "supported_model_types",
    "tokenize_blocks",
]
