"""The study: the paper's experiments run on real models and judged. Its cached steps (`steps`: profiles, losses,
generations, healing runs), the results grid with every question's score (`sweeps`), the statistics that compare
results (`statistics`), the ledger of the paper's claims with its criteria (`claims`) and the names of the result
files the chapters write (`files`). The book (`layerprune.book`) runs and renders it. Modules load on first use."""

from .._lazy import lazy_attributes

_NAMES = {
    "cached_profile": "steps",
    "cached_logit_lens": "steps",
    "cached_heldout_loss": "steps",
    "cached_generations": "steps",
    "cached_heal": "steps",
    "shortgpt_profile": "steps",
    "pruned_losses": "steps",
    "mean_over_seeds": "steps",
    "chance_levels": "steps",
    "healing_controls": "steps",
    "SweepResult": "sweeps",
    "sweep": "sweeps",
    "comparisons": "sweeps",
    "block_rows": "statistics",
    "single_layer_rows": "statistics",
    "ledger_table": "claims",
}
_MODULES = ("claims", "criteria", "curves", "files", "statistics", "steps", "sweeps")
__getattr__ = lazy_attributes(__name__, _MODULES, _NAMES)
__all__ = sorted(_NAMES)
