"""Data-parallel healing: this process's place among the processes of `accelerate launch`, and which training
blocks each step uses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from accelerate import PartialState
from accelerate.utils import parse_flag_from_env


@dataclass(frozen=True)
class Processes:
    """This process's place among the data-parallel processes (`accelerate launch`), or a single process."""

    rank: int
    world: int
    device: torch.device

    @classmethod
    def current(cls) -> Processes:
        cpu = parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available()
        state = PartialState(cpu=cpu)
        return cls(state.process_index, state.num_processes, state.device)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The element-wise sum of `tensor` over all processes (in place)."""
        if self.world > 1:
            torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
        return tensor

    def gather(self, value: Any) -> list[Any]:
        """`value` from every process, by rank."""
        if self.world == 1:
            return [value]
        values: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(values, value)
        return values

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()


class BlockSampler:
    """Which training blocks each step uses: seeded random permutations of all blocks (epochs), read in order.

    The blocks of step s depend only on (seed, number of blocks, blocks per step, s), so a resumed run sees the
    same data as an uninterrupted one.
    """

    def __init__(self, count: int, per_step: int, seed: int) -> None:
        self.count, self.per_step = count, per_step
        self._generator = torch.Generator().manual_seed(seed)
        self._orders: list[torch.Tensor] = []

    def indices(self, step: int) -> torch.Tensor:
        positions = range(step * self.per_step, (step + 1) * self.per_step)
        return torch.stack([self._order(p // self.count)[p % self.count] for p in positions])

    def _order(self, epoch: int) -> torch.Tensor:
        while len(self._orders) <= epoch:
            self._orders.append(torch.randperm(self.count, generator=self._generator))
        return self._orders[epoch]
