"""Shared prefixes: a model pruned at layers s..s+n-1 computes exactly what the unpruned model computes up to layer
s. `PrefixStates` keeps, per input, the hidden state entering such a layer s, so that every pruned copy of one
model (a sweep) runs only the layers from its block on, and the layers before it once in all.

It is for scoring passes without a KV cache (held-out loss, lm-eval's log-likelihoods): a forward pass that asks
for a cache (`use_cache=True`, as generation does) is computed in full and stores nothing. Results are
identical to computing every layer: a skipped layer's output is the very tensor the same weights computed on
the same input before."""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
import xxhash
from torch import nn

from .adapters import get_adapter
from .cache import hash_tensor
from .errors import InvalidInputError
from .validation import check_int

DEFAULT_MAX_BYTES = 2 << 30  # states kept per sweep; past it, new states are not stored (nothing else changes)


class PrefixStates:
    """Hidden states entering decoder layers, keyed by the input of layer 0 and the layer they enter."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = check_int("max_bytes", max_bytes, 0)
        self._states: dict[tuple[str, int], torch.Tensor] = {}
        self._bytes = 0
        self.layers_skipped = 0
        self.layers_run = 0

    @property
    def stored_bytes(self) -> int:
        return self._bytes

    @contextlib.contextmanager
    def sharing(self, model: nn.Module, shared: int, store_at: Iterable[int] = ()) -> Iterator[nn.Module]:
        """While active, `model`'s first `shared` decoder layers are taken to be the unpruned model's: a forward
        pass without a cache starts from the deepest state stored for its input at a layer <= `shared`, and keeps
        the states entering the layers `store_at` (each <= `shared`) for the next model."""
        layers = get_adapter(model).decoder_layers(model)
        if check_int("shared", shared, 0) > len(layers):
            raise InvalidInputError(f"shared must be at most the model's {len(layers)} layers, got {shared}")
        targets = sorted(set(store_at))
        if any(not 0 < at <= shared for at in targets):
            raise InvalidInputError(f"store_at must lie in 1..{shared} (the shared layers), got {targets}")
        span = _Pass(self, shared, set(targets))
        own = [layer.__dict__.get("forward") for layer in layers[:shared]]  # e.g. accelerate's offload hooks
        for index, layer in enumerate(layers[:shared]):
            layer.forward = types.MethodType(_shared_forward(span, index, layer.forward), layer)
        try:
            yield model
        finally:
            for layer, forward in zip(layers[:shared], own, strict=True):
                if forward is None:
                    del layer.forward
                else:
                    layer.forward = forward

    def deepest(self, key: str, limit: int) -> int:
        """The deepest layer <= `limit` whose entering state is stored for `key` (0: none)."""
        return max((at for at in range(1, limit + 1) if (key, at) in self._states), default=0)

    def state(self, key: str, at: int) -> torch.Tensor:
        """The stored state entering layer `at` for the input `key`."""
        return self._states[(key, at)]

    def retain(self, limits: Iterable[int]) -> None:
        """Keep, for each input, only the states a pass sharing up to one of `limits` layers would start from
        (the deepest stored at or below each limit); free the rest. A sweep calls it with the layers its remaining
        models share, so states no later model reads do not stay in memory."""
        wanted = set()
        for key in {key for key, _ in self._states}:
            wanted.update((key, self.deepest(key, limit)) for limit in limits)
        for entry in [entry for entry in self._states if entry not in wanted]:
            state = self._states.pop(entry)
            self._bytes -= state.numel() * state.element_size()

    def store(self, key: str, at: int, state: torch.Tensor) -> None:
        """Keep the state entering layer `at` for the input `key`, unless it would pass `max_bytes`."""
        size = state.numel() * state.element_size()
        if (key, at) not in self._states and self._bytes + size <= self.max_bytes:
            self._states[(key, at)] = state
            self._bytes += size


class _Pass:
    """The state of one forward pass through a model's shared layers."""

    def __init__(self, states: PrefixStates, shared: int, store_at: set[int]) -> None:
        self.states, self.shared, self.store_at = states, shared, store_at
        self.key: str | None = None  # None: this pass computes every layer and stores nothing
        self.start = 0  # the layer the pass really starts at (its entering state was stored)


def _shared_forward(span: _Pass, index: int, forward: Any) -> Any:
    """Layer `index`'s forward within the shared layers: skipped before the stored state the pass starts from,
    computed (and its output kept where a later layer's state is wanted) after it."""

    def run(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        hidden = args[0] if args else kwargs["hidden_states"]
        if index == 0:
            _begin(span, args, kwargs)
        if span.key is None:
            return forward(*args, **kwargs)
        if index < span.start:
            span.states.layers_skipped += 1
            return span.states.state(span.key, span.start) if index == span.start - 1 else hidden
        output = forward(*args, **kwargs)
        span.states.layers_run += 1
        if index + 1 in span.store_at and isinstance(output, torch.Tensor):
            span.states.store(span.key, index + 1, output)
        return output

    return run


def _begin(span: _Pass, args: tuple, kwargs: dict[str, Any]) -> None:
    """Key the pass by everything layer 0 is given (the embeddings, positions, mask), unless it asks for a cache
    or computes gradients."""
    if kwargs.get("use_cache") or torch.is_grad_enabled():
        span.key, span.start = None, 0
        return
    digest = xxhash.xxh3_64()
    for name, value in [*enumerate(args), *sorted(kwargs.items())]:
        _feed(digest, str(name), value)
    span.key = digest.hexdigest()
    span.start = span.states.deepest(span.key, span.shared)


def _feed(digest: xxhash.xxh3_64, name: str, value: Any) -> None:
    """Feed one argument of a layer into the key: tensors by value, tuples and mappings item by item, the rest by
    repr."""
    if isinstance(value, torch.Tensor):
        hash_tensor(digest, value, name)
    elif isinstance(value, Mapping):
        for key in sorted(value, key=str):
            _feed(digest, f"{name}.{key}", value[key])
    elif isinstance(value, tuple | list):
        for index, item in enumerate(value):
            _feed(digest, f"{name}.{index}", item)
    else:
        digest.update(f"{name}={value!r}".encode())
