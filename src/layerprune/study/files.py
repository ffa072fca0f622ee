"""The study's result files, named once: the chapters write them (`results_dir / files.BLOCKS`), the claims read
them, the table check and the book's reuse of unchanged chapters follow them. A file's two-digit prefix is the
chapter that writes it."""

from __future__ import annotations

from collections.abc import Sequence

PROFILE = "01_profile.json"
PROFILE_SUMMARY = "01_profile_summary.csv"
BLOCKS = "01_blocks.csv"
SINGLE_LAYERS = "01_single_layers.csv"
LOGIT_LENS = "01_logit_lens.csv"
SELECTION = "02_selection.csv"
PRUNED_LOSSES = "02_pruned_losses.csv"
PROSE_VS_QA = "02_prose_vs_qa.csv"
BEFORE_AFTER = "03_before_after.csv"
GENERATIONS = "03_generations.csv"
BLEU = "03_bleu.csv"
RANK_SWEEP = "03_rank_sweep.csv"
CONTROLS = "03_controls.csv"
HEADLINE = "04_headline.csv"
HEADLINE_COMPARISONS = "04_headline_comparisons.csv"
RESULTS = "04_results.csv"
COMPARISONS = "04_comparisons.csv"
PRUNED_SPEED = "04_speed.csv"
LADDER = "05_across_models.csv"
LADDER_COMPARISONS = "05_comparisons.csv"
LADDER_BLOCKS = "05_blocks.csv"
LADDER_SINGLE_LAYERS = "05_single_layers.csv"
PROFILING = "06_profiling.csv"
MEMORY = "06_memory.csv"
INFERENCE = "06_inference.csv"
PRECISION_AGREEMENT = "06_precision_agreement.csv"
PRECISION = "06_precision.csv"
CLAIMS = "07_claims.csv"
CRITERIA = "07_criteria.csv"

BLOCK_LOSSES = "block losses"
"""The column of a held-out loss's per-block means (nats, space-separated, in block order): the claims pair two
models' losses block by block for an interval (`statistics.block_comparison`); the pages do not show it."""

TIMINGS = frozenset({PRUNED_SPEED, PROFILING, MEMORY, INFERENCE, PRECISION})
"""Files of measured times and memory: they differ between two runs of the same book."""

READS: dict[str, tuple[str, ...]] = {
    "07_claims": ("01_similarity", "02_selection", "03_healing", "04_results", "05_across_models")
}
"""The chapters whose result files a chapter reads; a change to them, and to no other chapter's files, makes it
stale (chapters not listed read none)."""


def chapter_prefix(name: str) -> str:
    """The two-digit prefix of the chapter that writes result file `name` ("04" for "04_results.csv")."""
    return name[:2]


def block_losses_cell(values: Sequence[float]) -> str:
    """Per-block losses as one CSV cell of `BLOCK_LOSSES`."""
    return " ".join(f"{value:.7g}" for value in values)


def block_losses_of(cell: object) -> list[float]:
    """The per-block losses of a `BLOCK_LOSSES` cell (none for an empty or missing cell)."""
    return [float(value) for value in cell.split()] if isinstance(cell, str) else []
