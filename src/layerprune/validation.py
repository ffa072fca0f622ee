"""The checks every public function runs on its arguments: one clear InvalidInputError for a bad value."""

from __future__ import annotations

import math
from numbers import Integral
from typing import Any

import torch

from .errors import InvalidInputError


def check_int(name: str, value: Any, minimum: int, *, optional: bool = False) -> Any:
    """`value`, unless it is not an integer >= `minimum` (or None, when `optional`)."""
    if value is None and optional:
        return value
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        allowed = f"an integer >= {minimum}" + (" or None" if optional else "")
        raise InvalidInputError(f"{name} must be {allowed}, got {value!r}")
    return value


def check_positive(name: str, value: Any) -> float:
    """`value` as a float, unless it is not a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0 or not math.isfinite(value):
        raise InvalidInputError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def check_fraction(name: str, value: Any) -> float:
    """`value`, unless it is not a number in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise InvalidInputError(f"{name} must be a number in [0, 1), got {value!r}")
    return value


def check_choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    """Raise unless `value` is one of `allowed`."""
    if value not in allowed:
        raise InvalidInputError(f"{name} {value!r} is not one of {', '.join(map(repr, allowed))}")


def check_token_blocks(name: str, blocks: Any, *, min_length: int = 2) -> torch.Tensor:
    """`blocks`, unless it is not a non-empty [N, T] integer tensor of token ids with T >= `min_length`."""
    valid = (
        isinstance(blocks, torch.Tensor)
        and blocks.dim() == 2
        and not blocks.is_floating_point()
        and blocks.shape[0] > 0
        and blocks.shape[1] >= min_length
    )
    if not valid:
        shape = tuple(blocks.shape) if isinstance(blocks, torch.Tensor) else type(blocks).__name__
        length = f" with T >= {min_length}" if min_length > 1 else ""
        raise InvalidInputError(f"{name} must be a non-empty [N, T] tensor of token ids{length}, got {shape}")
    return blocks


def check_vocabulary(ids: torch.Tensor, vocab: int | None) -> None:
    """Raise unless every token id lies in 0..vocab-1 (no check when the vocabulary size is unknown)."""
    if vocab is not None and ids.numel() and (ids.min() < 0 or ids.max() >= vocab):
        raise InvalidInputError(
            f"token ids must lie in 0..{vocab - 1} (the model's vocabulary), got {int(ids.min())}..{int(ids.max())}; "
            "were the blocks made with this model's tokenizer?"
        )
