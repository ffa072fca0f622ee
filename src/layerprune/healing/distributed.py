"""`layerprune heal` as a module, for data-parallel healing under `accelerate launch` (or `torchrun`).

Every process loads the model, takes its share of each step's blocks and sums the LoRA gradients with the
others (so, dropout aside, loss and updates are those of one process doing the whole batch); the first process
writes the checkpoints and outputs. On GPUs (NCCL) and on CPUs (gloo) alike::

    accelerate launch --multi_gpu --num_processes 8 -m layerprune.healing.distributed --model DIR --out OUT \\
        --preset llama-2-70b
    accelerate launch --multi_gpu --num_processes 2 -m layerprune.healing.distributed --model DIR --out OUT

(``--multi_gpu`` only selects torch.distributed's launcher; without a GPU the processes use the CPU. accelerate's
``--cpu --num_processes N`` starts a single process unless MPI is set up.)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..errors import LayerpruneError
from .command import add_heal_arguments, run_heal


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the `layerprune heal` options and heal; a LayerpruneError becomes one line on stderr, status 2."""
    parser = argparse.ArgumentParser(
        prog="python -m layerprune.healing.distributed", description="Heal a (pruned) model, data-parallel."
    )
    add_heal_arguments(parser)
    args = parser.parse_args(argv)
    try:
        run_heal(args)
    except LayerpruneError as error:
        print(f"layerprune heal: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
