"""Healing budgets and hyperparameters: the paper's (Appendix A) and a CPU budget, and the validated recipe of
one run.

=================  ==========================================  ==========================================
                   paper, Appendix A (`PAPER_SETTINGS`)        CPU (`CPU_DEFAULTS`)
=================  ==========================================  ==========================================
data               C4                                          State of the Union (heal split), 128 tokens
steps x blocks     5000 x 16                                   60 x 4 (30,720 tokens)
warm-up, schedule  100 steps, cosine                           6 steps, cosine
rank, lr           per model (Llama-2-7B 2, 3e-4; ...); 64     8, 1e-3
base               4-bit NF4, bf16 compute                     4-bit NF4, the model's compute dtype
=================  ==========================================  ==========================================
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from ..errors import InvalidInputError
from ..models import QUANTIZATIONS, Quantization
from ..validation import check_fraction, check_int, check_positive

SCHEDULES = ("cosine", "linear", "constant_with_warmup")
WEIGHT_DECAY = 0.0
MAX_GRAD_NORM = 1.0


@dataclass(frozen=True)
class HealSettings:
    """A healing budget: LoRA rank and learning rate, optimizer steps, blocks per step and warm-up."""

    rank: int
    lr: float
    steps: int = 5000
    batch_size: int = 16
    grad_accum: int = 1
    warmup: int = 100
    quantization: Quantization = "4bit"

    def as_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `heal`."""
        return asdict(self)


PAPER_SETTINGS: dict[str, HealSettings] = {
    "llama-2-7b": HealSettings(rank=2, lr=3e-4),
    "llama-2-13b": HealSettings(rank=64, lr=3e-4),
    "llama-2-70b": HealSettings(rank=8, lr=3e-5),
    "mistral-7b": HealSettings(rank=4, lr=3e-6),
    "phi-2": HealSettings(rank=64, lr=2e-4),
    "other": HealSettings(rank=64, lr=3e-4),
}
"""The paper's Appendix A: 5000 steps of batch 16 (C4), 100 warm-up steps, cosine, QLoRA on the FFN.

Llama-2-13B's and other models' learning rate (3e-4) is the Llama-2-7B value, assumed.
"""

CPU_DEFAULTS = HealSettings(rank=8, lr=1e-3, steps=60, batch_size=4, grad_accum=1, warmup=6)
"""A CPU budget: 60 steps of 4 blocks (30,720 tokens of 128-token blocks), 1/5,333 of the paper's 5000 x 16
blocks of 2048 tokens; chapter 6 and `bench/healing.py` measure what it costs."""


@dataclass(frozen=True)
class Recipe:
    """The validated hyperparameters of one healing run."""

    quantization: Quantization
    rank: int
    alpha: float
    dropout: float
    lr: float
    steps: int
    batch_size: int
    grad_accum: int
    warmup: int
    schedule: str
    seed: int

    @classmethod
    def checked(
        cls, quantization, rank, alpha, dropout, lr, steps, batch_size, grad_accum, warmup, schedule, seed
    ) -> Recipe:
        if quantization not in (*QUANTIZATIONS, None):
            raise InvalidInputError(f"quantization {quantization!r} is not one of {QUANTIZATIONS} or None (plain LoRA)")
        rank = check_int("rank", rank, 1)
        alpha = rank if alpha is None else check_positive("alpha", alpha)
        check_fraction("dropout", dropout)
        steps = check_int("steps", steps, 1)
        if schedule not in SCHEDULES:
            raise InvalidInputError(f"schedule {schedule!r} is not one of {SCHEDULES}")
        return cls(
            quantization,
            rank,
            float(alpha),
            float(dropout),
            check_positive("lr", lr),
            steps,
            check_int("batch_size", batch_size, 1),
            check_int("grad_accum", grad_accum, 1),
            check_int("warmup", warmup, 0),
            schedule,
            check_int("seed", seed, 0),
        )

    def record(self, targets: Sequence[str], blocks: torch.Tensor, processes: int, data: str | None) -> dict[str, Any]:
        """The healing record for the model card and `config.layerprune["healing"]`."""
        return {
            "method": "QLoRA" if self.quantization else "LoRA",
            "quantization": self.quantization or "none",
            "rank": self.rank,
            "alpha": self.alpha,
            "dropout": self.dropout,
            "targets": list(targets),
            "lr": self.lr,
            "steps": self.steps,
            "batch_size": self.batch_size,
            "grad_accum": self.grad_accum,
            "blocks_per_step": self.batch_size * self.grad_accum,
            "warmup": self.warmup,
            "schedule": self.schedule,
            "optimizer": "AdamW",
            "weight_decay": WEIGHT_DECAY,
            "max_grad_norm": MAX_GRAD_NORM,
            "seed": self.seed,
            "block_size": int(blocks.shape[1]),
            "train_blocks": int(blocks.shape[0]),
            "num_processes": processes,
            "data": data or "train_blocks",
        }
