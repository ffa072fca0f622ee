"""The paper's held-out loss: mean next-token loss, normalised by log(vocabulary size)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from .adapters import model_device
from .head import split_head
from .validation import check_int, check_token_blocks


@dataclass(frozen=True)
class HeldoutLoss:
    """Mean token loss (nats), loss / log(V) as in the paper, perplexity, how many tokens were scored, and each
    block's mean loss (for intervals over the blocks; empty where not kept)."""

    loss: float
    normalized: float
    perplexity: float
    tokens: int
    vocab_size: int
    block_losses: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "block_losses", tuple(self.block_losses))  # a list when read back from JSON

    def as_dict(self, blocks: bool = True) -> dict:
        """The fields as a dict; without `blocks`, the scalars only (as a healed model's record keeps them)."""
        values = asdict(self)
        if not blocks:
            values.pop("block_losses")
        return values


def vocab_size(model: nn.Module) -> int:
    """The number of logits the model produces per token."""
    head = model.get_output_embeddings()
    return int(head.weight.shape[0]) if head is not None else int(model.config.vocab_size)


HEAD_SLICE_BYTES = 64 * 2**20
"""The most float32 logits the LM head and its log-softmax produce at once: next-token losses are computed over
slices of positions, so a batch of 8 blocks of 128 tokens with a 152k-token vocabulary (Qwen2.5) holds about
64 MiB of them at a time instead of about 1.5 GB (bf16 logits, their float32 copy and its log-softmax)."""


def next_token_losses(model: nn.Module, ids: torch.Tensor, *, backward_scale: float | None = None) -> torch.Tensor:
    """Each position's next-token cross-entropy (nats, float32) for a batch of blocks, [N, T - 1], detached: the
    one loss that evaluation and healing share.

    The decoder runs once; the head runs on slices of at most `HEAD_SLICE_BYTES` of logits, which gives every
    token's loss exactly as one pass over all positions would. With `backward_scale`, the gradient of
    `backward_scale` x the summed loss is accumulated into the model's trainable parameters, the head's part
    slice by slice, then once through the decoder."""
    head = split_head(model)
    targets = ids[:, 1:].reshape(-1)
    if head is None:  # a model whose head this package does not know: its own forward, all positions at once
        logits = model(input_ids=ids, use_cache=False).logits[:, :-1].float()
        per_token = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets, reduction="none")
        if backward_scale is not None:
            per_token.backward(torch.full_like(per_token, backward_scale))
        return per_token.detach().view_as(ids[:, 1:])
    hidden = head.decoder(input_ids=ids, use_cache=False).last_hidden_state[:, :-1]
    states = hidden.detach().requires_grad_() if backward_scale is not None else hidden
    rows = states.reshape(-1, states.shape[-1])
    per_slice = max(1, HEAD_SLICE_BYTES // (4 * vocab_size(model)))
    losses = []
    for part, target in zip(rows.split(per_slice), targets.split(per_slice), strict=True):
        loss = nn.functional.cross_entropy(head.logits(part).float(), target, reduction="none")
        if backward_scale is not None:
            loss.backward(torch.full_like(loss, backward_scale))
        losses.append(loss.detach())
    if backward_scale is not None:
        hidden.backward(states.grad)
    return torch.cat(losses).view_as(ids[:, 1:])


def next_token_loss_sum(model: nn.Module, ids: torch.Tensor, *, backward_scale: float | None = None) -> torch.Tensor:
    """`next_token_losses` summed as ``cross_entropy(..., reduction="sum")`` over all positions would sum them."""
    return summed(next_token_losses(model, ids, backward_scale=backward_scale).reshape(-1))


def summed(per_token: torch.Tensor) -> torch.Tensor:
    """A vector of per-token losses summed in the order ``cross_entropy(..., reduction="sum")`` adds them."""
    picked = torch.zeros(len(per_token), dtype=torch.long, device=per_token.device)
    return nn.functional.nll_loss(-per_token.unsqueeze(1), picked, reduction="sum")


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
    total, count, block_losses = 0.0, 0, []
    batches = blocks.split(batch_size)
    for batch in tqdm(batches, desc="held-out loss", disable=not progress, leave=False):
        losses = next_token_losses(model, batch.to(device))
        total += summed(losses.reshape(-1)).item()
        count += losses.numel()
        block_losses += losses.double().mean(dim=1).tolist()
    model.train(was_training)
    mean = total / count
    size = vocab_size(model)
    return HeldoutLoss(mean, mean / math.log(size), math.exp(mean), count, size, tuple(block_losses))
