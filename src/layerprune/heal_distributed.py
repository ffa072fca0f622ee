"""``accelerate launch -m layerprune.heal_distributed``: the data-parallel `layerprune heal`
(`layerprune.healing.distributed`)."""

import sys

from .healing.distributed import main

if __name__ == "__main__":
    sys.exit(main())
