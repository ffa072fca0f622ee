"""The matrix FLOPs a process's models compute, counted as they run: every `nn.Linear` call (the decoder's
projections, the LM head, LoRA's adapters; bitsandbytes' layers are `nn.Linear` too) costs 2 x inputs x outputs per
row, once more when its input carries a gradient (the backward pass through it) and once more when its weight
trains (the weight's gradient). A layer recomputed during the backward pass (activation checkpointing) is not
counted again: the floor is the model's FLOPs, and recomputing them is time spent over it. Attention's score
products are not counted (under 3% of a layer's FLOPs at the book's lengths). With the machine's matmul rate this
turns a run into a floor on its time: FLOPs / rate.

The book's runner sets `FLOP_LOG` to a folder for each chapter's kernel; `layerprune` then counts from its import on,
in that process and in every process it starts, each keeping its running total in a file of its own there
(`read_flops` adds them up)."""

from __future__ import annotations

import atexit
import json
import os
import time
from pathlib import Path

import torch
from torch import nn

FLOP_LOG = "LAYERPRUNE_FLOP_LOG"
"""The environment variable naming the folder each counting process writes its FLOP count to (`<pid>.json`)."""
_WRITE_EVERY = 2.0  # seconds between writes of the running total


class LinearFlops:
    """A global forward hook counting the FLOPs of every `nn.Linear` call (forward, and the backward it implies)."""

    def __init__(self) -> None:
        self.forward = 0.0
        self.backward = 0.0

    @property
    def total(self) -> float:
        return self.forward + self.backward

    def __call__(self, module: nn.Module, args: tuple, output: object) -> None:
        if not isinstance(module, nn.Linear) or not args or not isinstance(args[0], torch.Tensor) or _in_backward():
            return
        flops = 2.0 * (args[0].numel() // module.in_features) * module.in_features * module.out_features
        self.forward += flops
        if torch.is_grad_enabled():
            self.backward += flops * (int(args[0].requires_grad) + int(module.weight.requires_grad))


def _in_backward() -> bool:
    """Whether autograd is running a backward pass now (a checkpointed layer's forward is being recomputed)."""
    return torch._C._current_graph_task_id() != -1


def count_into(path: str | Path) -> LinearFlops:
    """Count every `nn.Linear` call of this process from now on; the totals go to `path` (JSON) every few seconds
    and at exit."""
    counter, target = LinearFlops(), Path(path)
    last = [time.monotonic()]

    def write() -> None:
        target.write_text(json.dumps({"forward": counter.forward, "backward": counter.backward}))

    def hook(module: nn.Module, args: tuple, output: object) -> None:
        counter(module, args, output)
        if time.monotonic() - last[0] > _WRITE_EVERY:
            last[0] = time.monotonic()
            write()

    nn.modules.module.register_module_forward_hook(hook)
    atexit.register(write)
    write()
    return counter


def count_if_asked() -> LinearFlops | None:
    """`count_into` this process's file in the folder `FLOP_LOG` names, when it is set (the book's runner sets it
    for a chapter's kernel)."""
    folder = os.environ.get(FLOP_LOG)
    return count_into(Path(folder) / f"{os.getpid()}.json") if folder else None


def read_flops(folder: str | Path) -> float:
    """The FLOPs the processes counting into `folder` reached, in all (0 if none wrote)."""
    total = 0.0
    for path in Path(folder).glob("*.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        total += float(data.get("forward", 0.0)) + float(data.get("backward", 0.0))
    return total
