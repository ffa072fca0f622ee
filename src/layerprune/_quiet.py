"""Library log messages that are noise for layerprune users, silenced before those libraries are imported."""

import logging

# On AVX512-BF16 CPUs bitsandbytes warns at import that an optional kernel (fetched from the Hugging Face hub) is
# missing; the portable kernels it falls back to are the ones layerprune uses.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
