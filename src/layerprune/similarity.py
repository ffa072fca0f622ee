"""The paper's layer-similarity profile: the distance D[n, l] between the residual stream before layer l and
before layer l + n, for every block size n and start l, from one forward pass over the data.

x^(l) is the input to decoder layer l (l = 0..L-1) and x^(L) the output of the last decoder layer, before the
final norm. On one sequence the angular distance is arccos(cos(x_T^(l), x_T^(l+n))) / pi at its final non-pad
token T; D[n, l] is its mean over sequences.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .adapters import get_adapter, model_device, model_name, unwrap
from .cache import model_identity, write_json_atomic
from .errors import InvalidInputError
from .validation import check_choice, check_int, check_token_blocks, check_vocabulary

TOKENS = ("last", "all")
METRICS = ("angular", "cosine")
FORMAT = "layerprune.distance_profile"
FORMAT_VERSION = 1
_CHUNK_ELEMENTS = 1 << 23  # float64 elements per temporary when comparing layer pairs (64 MiB)


@dataclass(frozen=True, eq=False)
class DistanceProfile:
    """Mean and std (over sequences) of D[n, l], as [L+1, L+1] float64 arrays indexed [n, l].

    Row n holds l = 0..L-n; entries with l > L-n are NaN; row 0 (a state against itself) is 0. The std is the
    population std of the per-sequence distances. `metric` "angular" is arccos(cos)/pi in [0, 1]; "cosine" is
    1 - cos in [0, 2] (ShortGPT's Block Influence). `token` "last" uses the final non-pad token of each sequence;
    "all" the mean over its non-pad tokens.
    """

    mean: np.ndarray
    std: np.ndarray
    num_sequences: int
    num_layers: int
    model_identity: str
    model_name: str
    token: str
    metric: str
    sequences: np.ndarray | None = None
    """Each sequence's D[n, l], [N, L+1, L+1] (NaN where l > L-n), when profiled with `keep_sequences`: what a
    bootstrap over sequences resamples."""

    def curve(self, n: int) -> np.ndarray:
        """D[n, l] for l = 0..L-n."""
        if not 0 <= n <= self.num_layers:
            raise InvalidInputError(f"block size n={n!r} is outside 0..{self.num_layers}")
        return self.mean[n, : self.num_layers - n + 1]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict; the arrays are stored as ragged rows (row n has L-n+1 entries)."""
        rows = range(self.num_layers + 1)
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "model_identity": self.model_identity,
            "model_name": self.model_name,
            "num_layers": self.num_layers,
            "num_sequences": self.num_sequences,
            "token": self.token,
            "metric": self.metric,
            "mean": [self.mean[n, : self.num_layers - n + 1].tolist() for n in rows],
            "std": [self.std[n, : self.num_layers - n + 1].tolist() for n in rows],
        } | ({} if self.sequences is None else {"sequences": [_ragged(d, self.num_layers) for d in self.sequences]})

    def cache_key(self) -> dict[str, Any]:
        """`to_dict` without `model_name` (the directory the model was loaded from): how a profile enters a cache
        key (`layerprune.cache.key_part`), by what it holds, never by where its model lay."""
        payload = self.to_dict()
        payload.pop("model_name")
        return payload

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> DistanceProfile:
        """The inverse of `to_dict`; a payload of another format or shape raises InvalidInputError."""
        if not isinstance(payload, Mapping) or payload.get("format") != FORMAT:
            raise InvalidInputError(f"not a layerprune distance profile (no 'format': {FORMAT!r})")
        if payload.get("version") != FORMAT_VERSION:
            raise InvalidInputError(
                f"unsupported profile version {payload.get('version')!r}; expected {FORMAT_VERSION}"
            )
        try:
            layers = int(payload["num_layers"])
            mean, std = (_square(payload[key], layers) for key in ("mean", "std"))
            profile = cls(
                mean=mean,
                std=std,
                num_sequences=int(payload["num_sequences"]),
                num_layers=layers,
                model_identity=str(payload["model_identity"]),
                model_name=str(payload["model_name"]),
                token=str(payload["token"]),
                metric=str(payload["metric"]),
                sequences=None
                if payload.get("sequences") is None
                else np.stack([_square(rows, layers) for rows in payload["sequences"]]),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise InvalidInputError(f"malformed distance profile ({type(error).__name__}: {error})") from None
        check_choice("token", profile.token, TOKENS)
        check_choice("metric", profile.metric, METRICS)
        return profile

    def save(self, path: str | Path) -> None:
        """Write the profile as JSON, atomically."""
        write_json_atomic(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> DistanceProfile:
        """Read a profile written by `save`; any problem is one InvalidInputError naming the file."""
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, InvalidInputError) as error:
            raise InvalidInputError(f"cannot read distance profile {str(path)!r}: {error}") from None


def _ragged(square: np.ndarray, layers: int) -> list[list[float]]:
    """An [L+1, L+1] array -> ragged rows (row n of length L-n+1), the inverse of `_square`."""
    return [square[n, : layers - n + 1].tolist() for n in range(layers + 1)]


def _square(rows: list, layers: int) -> np.ndarray:
    """Ragged rows (row n of length L-n+1) -> an [L+1, L+1] array with NaN past each row's end."""
    if layers < 1 or len(rows) != layers + 1:
        raise ValueError(f"expected {layers + 1} rows for {layers} layers, got {len(rows)}")
    square = np.full((layers + 1, layers + 1), np.nan)
    for n, row in enumerate(rows):
        if len(row) != layers - n + 1:
            raise ValueError(f"row {n} has {len(row)} entries, expected {layers - n + 1}")
        square[n, : layers - n + 1] = np.asarray(row, dtype=np.float64)
    return square


@torch.no_grad()
def profile_distances(
    model: nn.Module,
    blocks: torch.Tensor | Mapping[str, torch.Tensor],
    *,
    token: str = "last",
    metric: str = "angular",
    batch_size: int = 8,
    progress: bool = True,
    identity: str | None = None,
    keep_sequences: bool = False,
) -> DistanceProfile:
    """D[n, l] for every n = 1..L and l = 0..L-n, from one forward pass of the base model (no LM head).

    `blocks` is an [N, T] tensor of token ids, or a mapping (e.g. a BatchEncoding) with `input_ids` and an
    optional `attention_mask`; left or right padding both work. Forward pre-hooks capture each layer's input,
    a forward hook the last layer's output; only the vectors needed are kept. `identity` is the model's
    `model_identity` when the caller already has it (hashing the weights is skipped). `keep_sequences` also keeps
    each sequence's D (`DistanceProfile.sequences`), for bootstrap intervals.
    """
    check_choice("token", token, TOKENS)
    check_choice("metric", metric, METRICS)
    check_int("batch_size", batch_size, 1)
    ids, mask = _inputs(blocks, model.config)
    layers = get_adapter(model).decoder_layers(model)
    base = _base_model(model)
    device = model_device(model)
    count = len(layers)
    sums = torch.zeros(count + 1, count + 1, dtype=torch.float64, device=device)
    squares = torch.zeros_like(sums)
    sequences: list[torch.Tensor] | None = [] if keep_sequences else None
    capture = _Capture(count, token, device)
    handles = capture.attach(layers)
    was_training = model.training
    model.eval()
    try:
        batches = range(0, ids.shape[0], batch_size)
        for start in tqdm(batches, desc="profile", disable=not progress, leave=False):
            batch_ids = ids[start : start + batch_size].to(device)
            batch_mask = None if mask is None else mask[start : start + batch_size].to(device)
            capture.start(batch_ids, batch_mask)
            base(input_ids=batch_ids, **_mask_kwargs(batch_mask), use_cache=False)
            _accumulate(capture.finish(), batch_mask if token == "all" else None, metric, sums, squares, sequences)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    identity = identity or model_identity(model)
    profile = _profile(model, sums.cpu(), squares.cpu(), ids.shape[0], token, metric, identity)
    if sequences is None:
        return profile
    return dataclasses.replace(profile, sequences=torch.cat(sequences).cpu().numpy())


def _inputs(blocks: torch.Tensor | Mapping[str, torch.Tensor], config) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Validated token ids [N, T] and the attention mask (None when there is no padding)."""
    if isinstance(blocks, Mapping):
        if "input_ids" not in blocks:
            raise InvalidInputError(f"blocks is a mapping without 'input_ids' (keys: {sorted(blocks)})")
        ids, mask = blocks["input_ids"], blocks.get("attention_mask")
    else:
        ids, mask = blocks, None
    check_token_blocks("blocks", ids, min_length=1)
    check_vocabulary(ids, getattr(config, "vocab_size", None))
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or mask.shape != ids.shape:
            raise InvalidInputError(f"attention_mask must be a tensor of the shape of input_ids {tuple(ids.shape)}")
        mask = mask.bool()
        if not mask.any(-1).all():
            raise InvalidInputError("every sequence needs at least one non-pad token (attention_mask == 1)")
        mask = None if mask.all() else mask
    longest = ids.shape[1] if mask is None else int(mask.sum(-1).max())
    limit = getattr(config, "max_position_embeddings", None)
    if limit is not None and longest > limit:
        raise InvalidInputError(
            f"sequence length {longest} exceeds the model's max_position_embeddings {limit}; use shorter blocks"
        )
    return ids, mask


def _base_model(model: nn.Module) -> nn.Module:
    """The module that owns the decoder layers (e.g. model.model), so that no logits are computed."""
    module = unwrap(model)
    for part in filter(None, get_adapter(model).layers.rpartition(".")[0].split(".")):
        module = getattr(module, part)
    return module


def _mask_kwargs(mask: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Attention mask and position ids that count only real tokens (so left padding changes nothing)."""
    if mask is None:
        return {}
    positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
    return {"attention_mask": mask.long(), "position_ids": positions}


class _Capture:
    """Hooks storing x^(0..L) of the current batch on `device`: at the last non-pad token, or every token."""

    def __init__(self, num_layers: int, token: str, device: torch.device) -> None:
        self.states: list[torch.Tensor | None] = [None] * (num_layers + 1)
        self.token = token
        self.device = device
        self.last: torch.Tensor | None = None

    def attach(self, layers: nn.ModuleList) -> list[torch.utils.hooks.RemovableHandle]:
        handles = []
        try:
            for index, layer in enumerate(layers):
                handles.append(layer.register_forward_pre_hook(self._input_hook(index), with_kwargs=True))
            handles.append(layers[-1].register_forward_hook(self._output_hook(len(layers))))
        except BaseException:
            for handle in handles:
                handle.remove()
            raise
        return handles

    def start(self, ids: torch.Tensor, mask: torch.Tensor | None) -> None:
        """Forget the previous batch; find each sequence's last non-pad position."""
        self.states = [None] * len(self.states)
        width = ids.shape[1]
        if mask is None:
            self.last = torch.full((ids.shape[0],), width - 1, dtype=torch.long, device=ids.device)
        else:
            self.last = width - 1 - mask.long().flip(-1).argmax(-1)

    def finish(self) -> torch.Tensor:
        """x^(0..L) stacked: [L+1, B, H] (token "last") or [L+1, B, T, H] (token "all")."""
        missing = [i for i, state in enumerate(self.states) if state is None]
        if missing:
            raise RuntimeError(f"the forward pass did not reach decoder layer(s) {missing}")
        return torch.stack(self.states)

    def _store(self, index: int, hidden: torch.Tensor) -> None:
        if self.token == "last":
            rows = torch.arange(hidden.shape[0], device=hidden.device)
            hidden = hidden[rows, self.last.to(hidden.device)]
        self.states[index] = hidden.detach().to(self.device)

    def _input_hook(self, index: int):
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            self._store(index, args[0] if args else kwargs["hidden_states"])

        return hook

    def _output_hook(self, index: int):
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            self._store(index, output[0] if isinstance(output, tuple) else output)

        return hook


def _accumulate(
    states: torch.Tensor,
    mask: torch.Tensor | None,
    metric: str,
    sums: torch.Tensor,
    squares: torch.Tensor,
    sequences: list[torch.Tensor] | None = None,
) -> None:
    """Add each sequence's d(x^(l), x^(l+n)) and its square to sums[n, l] and squares[n, l] (float64).

    `states` is [L+1, B, H], or [L+1, B, T, H] for a mean over tokens (the real ones where `mask` is given).
    All pairs (l, l+n) are done in a few large operations, in chunks that bound the float64 temporaries
    (small inputs are normalized once, large ones chunk by chunk).
    """
    width = states.shape[0]
    starts, ends = torch.triu_indices(width, width, offset=1, device=states.device)
    step = max(1, _CHUNK_ELEMENTS // states[0].numel())
    whole = states.numel() <= _CHUNK_ELEMENTS
    units = nn.functional.normalize(states.double(), dim=-1) if whole else states
    for first in range(0, starts.numel(), step):
        start, end = starts[first : first + step], ends[first : first + step]
        a, b = (units[i] if whole else nn.functional.normalize(units[i].double(), dim=-1) for i in (start, end))
        value = pair_distance(a, b, metric)
        if states.dim() == 4:
            value = value.mean(-1) if mask is None else torch.where(mask, value, 0.0).sum(-1) / mask.sum(-1)
        index = (end - start) * width + start
        sums.view(-1).index_add_(0, index, value.sum(-1))
        squares.view(-1).index_add_(0, index, value.square().sum(-1))
        if sequences is not None:
            if first == 0:
                sequences.append(_diagonal_zeros(width, value.shape[-1], sums.device))
            sequences[-1].view(value.shape[-1], -1)[:, index] = value.T


def _diagonal_zeros(width: int, batch: int, device: torch.device) -> torch.Tensor:
    """[B, L+1, L+1] float64: 0 in row n = 0 (a state against itself), NaN elsewhere until filled."""
    square = torch.full((batch, width, width), float("nan"), dtype=torch.float64, device=device)
    square[:, 0] = 0.0
    return square


def pair_distance(a: torch.Tensor, b: torch.Tensor, metric: str = "angular") -> torch.Tensor:
    """Distance between unit vectors along the last dim, accurate near 0.

    angular: 2 atan2(|a-b|, |a+b|) / pi (= arccos(a.b) / pi); cosine: |a-b|^2 / 2 (= 1 - a.b).
    """
    gap = (a - b).norm(dim=-1)
    if metric == "cosine":
        return 0.5 * gap.square()
    return 2 * torch.atan2(gap, (a + b).norm(dim=-1)) / math.pi


def _profile(
    model: nn.Module, sums: torch.Tensor, squares: torch.Tensor, count: int, token: str, metric: str, identity: str
) -> DistanceProfile:
    layers = sums.shape[0] - 1
    valid = torch.ones(layers + 1, layers + 1, dtype=torch.bool).triu().flip(-1)
    mean = sums / count
    std = (squares / count - mean.square()).clamp(min=0).sqrt()
    nan = torch.tensor(float("nan"), dtype=torch.float64)
    return DistanceProfile(
        mean=torch.where(valid, mean, nan).numpy(),
        std=torch.where(valid, std, nan).numpy(),
        num_sequences=count,
        num_layers=layers,
        model_identity=identity,
        model_name=model_name(model),
        token=token,
        metric=metric,
    )
