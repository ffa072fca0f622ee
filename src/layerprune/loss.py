"""The paper's held-out loss: mean next-token loss, normalised by log(vocabulary size)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from .adapters import model_device
from .validation import check_int, check_token_blocks


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


def next_token_loss_sum(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """The summed next-token cross-entropy (nats, computed in float32) of a batch of blocks: the one loss that
    evaluation and healing share."""
    logits = model(input_ids=ids, use_cache=False).logits[:, :-1].float()
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="sum")


@torch.no_grad()
def heldout_loss(
    model: nn.Module,
    blocks: torch.Tensor,
    *,
    batch_size: int = 8,
    progress: bool = True,
) -> HeldoutLoss:
    """Token-weighted mean cross-entropy of `blocks` ([N, T] token ids, every token real) under `model`."""
    check_token_blocks("blocks", blocks)
    check_int("batch_size", batch_size, 1)
    was_training = model.training
    model.eval()
    device = model_device(model)
    total, count = 0.0, 0
    batches = blocks.split(batch_size)
    for batch in tqdm(batches, desc="held-out loss", disable=not progress, leave=False):
        total += next_token_loss_sum(model, batch.to(device)).item()
        count += batch[:, 1:].numel()
    model.train(was_training)
    mean = total / count
    size = vocab_size(model)
    return HeldoutLoss(mean, mean / math.log(size), math.exp(mean), count, size)
