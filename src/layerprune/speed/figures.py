"""Figures of the speed reports."""

from __future__ import annotations

from .report import Report


def speedup_figure(report: Report):
    """Measured and ideal speedup against the fraction of layers removed, prefill and decoding side by side."""
    import matplotlib.pyplot as plt

    table = report.table()
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    for ax, phase in zip(axes, ("prefill", "decode"), strict=True):
        ax.plot(table["fraction"], table[f"{phase} speedup"], marker="o", label="measured")
        ax.plot(table["fraction"], table[f"{phase} ideal"], linestyle="--", marker=".", label="ideal")
        ax.plot(table["fraction"], 1 / (1 - table["fraction"]), color="gray", linestyle=":", label="1 / (1 - fraction)")
        ax.set(xlabel="fraction of layers removed", ylabel="speedup over the unpruned model", title=phase)
        ax.legend(fontsize=8)
    return figure
