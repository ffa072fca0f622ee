"""The two halves of a causal LM, the decoder and its head, so that the head (a 152k-token vocabulary is a large
matrix) runs only where, and only as much at a time as, its logits are needed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .adapters import get_adapter, unwrap
from .errors import UnsupportedArchitectureError


@dataclass(frozen=True)
class Head:
    """The two halves of a causal LM: the decoder (embeddings, layers, final norm) and what turns its last hidden
    state into logits."""

    decoder: nn.Module
    logits: Callable[[torch.Tensor], torch.Tensor]


def split_head(model: nn.Module) -> Head | None:
    """The decoder and the head of `model` (plain, pruned, PeftModel with LoRA, bitsandbytes 4-bit), or None
    where only the model's own forward is known to be right (unsupported family, prompt-learning adapters)."""
    try:
        get_adapter(model)
    except UnsupportedArchitectureError:
        return None
    peft_config = getattr(model, "active_peft_config", None)
    if peft_config is not None and getattr(peft_config, "is_prompt_learning", False):
        return None  # virtual tokens are prepended by PeftModel.forward itself
    inner = unwrap(model)
    decoder = getattr(inner, "get_decoder", lambda: None)()
    head = getattr(inner, "get_output_embeddings", lambda: None)()
    if decoder is None or head is None:
        return None
    cap = getattr(inner.config, "final_logit_softcapping", None)

    def logits(hidden: torch.Tensor) -> torch.Tensor:
        out = head(hidden)
        if cap is not None:  # as Gemma3ForCausalLM.forward
            out = torch.tanh(out / cap) * cap
        return out

    return Head(decoder, logits)
