"""The paper's held-out loss: mean next-token loss, normalised by log(vocabulary size)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from .errors import InvalidInputError


@dataclass(frozen=True)
class HeldoutLoss:
    """Mean token loss (nats), loss / log(V) as in the paper, perplexity, and how many tokens were scored."""

    loss: float
    normalized: float
    perplexity: float
    tokens: int
    vocab_size: int

    def as_dict(self) -> dict:
        return asdict(self)


def vocab_size(model: nn.Module) -> int:
    """The number of logits the model produces per token."""
    head = model.get_output_embeddings()
    return int(head.weight.shape[0]) if head is not None else int(model.config.vocab_size)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter."""
    return next(model.parameters()).device


@torch.no_grad()
def heldout_loss(
    model: nn.Module,
    blocks: torch.Tensor,
    *,
    batch_size: int = 8,
    progress: bool = True,
) -> HeldoutLoss:
    """Token-weighted mean cross-entropy of `blocks` ([N, T] token ids, every token real) under `model`."""
    if not isinstance(blocks, torch.Tensor) or blocks.dim() != 2 or blocks.shape[0] == 0 or blocks.shape[1] < 2:
        raise InvalidInputError("blocks must be a non-empty [N, T] tensor of token ids with T >= 2")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInputError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    was_training = model.training
    model.eval()
    device = model_device(model)
    total, count = 0.0, 0
    batches = blocks.split(batch_size)
    for batch in tqdm(batches, desc="held-out loss", disable=not progress, leave=False):
        ids = batch.to(device)
        logits = model(input_ids=ids, use_cache=False).logits[:, :-1].float()
        targets = ids[:, 1:]
        total += nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum"
        ).item()
        count += targets.numel()
    model.train(was_training)
    mean = total / count
    size = vocab_size(model)
    return HeldoutLoss(mean, mean / math.log(size), math.exp(mean), count, size)
