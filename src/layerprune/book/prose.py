"""Sentences that state results, built from the result tables: the book's words cannot drift from its numbers.
Each function takes what a chapter computed and returns Markdown."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..healing.settings import PAPER_SETTINGS
from ..study import files
from ..study.claims import (
    DEEP,
    accuracy_interval,
    find_comparison,
    fraction_label,
    largest_deep_change,
    read_curve,
    removed,
    resolved_above_chance,
)
from ..study.statistics import DIFFERENT, MARGINS, draws_gap, net_recovery


def _accuracy(row: pd.Series, task: str) -> str:
    """'0.53 [0.47, 0.58]' with the 95% Wilson interval."""
    low, high = accuracy_interval(row, task)
    return f"{row[task]:.3f} [{low:.3f}, {high:.3f}]"


def depth(blocks: pd.DataFrame) -> str:
    """Where the most alike blocks sit, and how stable the choice is under resampling the sequences."""
    rows = blocks[(blocks["fraction"] >= 0.1) & (blocks["fraction"] <= 0.5)]
    if rows.empty:
        return "The model is too shallow for blocks of 10-50% of its layers."
    layers = int(rows["layers"].iloc[0])
    deep = (rows["start"] >= DEEP * rows["layers"]).sum()
    shaky = rows.loc[rows["same start"].idxmin()]
    runner = "" if pd.isna(shaky["runner-up start"]) else f", otherwise mostly {int(shaky['runner-up start'])}"
    return (
        f"For blocks of {rows['n'].min()} to {rows['n'].max()} of the {layers} layers (10-50%), the most alike block "
        f"starts at $\\ell^*(n)$ = {', '.join(map(str, rows['start'].astype(int)))}: {deep} of {len(rows)} start in "
        f"the deeper half (at or past layer {DEEP * layers:g}). Resampling the profiled sequences (bootstrap) picks "
        f"the same $\\ell^*(n)$ in {rows['same start'].mean():.0%} of draws on average; the least stable is n = "
        f"{int(shaky['n'])}, picked in {shaky['same start']:.0%} of draws{runner}."
    )


def final_layer(single: pd.DataFrame) -> str:
    """How the final layer's change compares with that of the other layers of the deeper half (claim (b))."""
    final, top, first = single.iloc[-1], largest_deep_change(single), single.loc[single["D"].idxmax()]
    relation = "larger than" if final["D"] > top["D"] else "not larger than"
    resolved = "resolved" if final["D low"] > top["D high"] or final["D high"] < top["D low"] else "not resolved"
    overall = (
        ""
        if first["layer"] == final["layer"]
        else f" Over all layers, the largest change is layer {int(first['layer'])}'s ({first['D']:.3f})."
    )
    return (
        f"The final layer changes the residual stream by $D[1, {int(final['layer'])}]$ = {final['D']:.3f} "
        f"[{final['D low']:.3f}, {final['D high']:.3f}], {relation} the largest change of the other layers of the "
        f"deeper half (layer {int(top['layer'])}: {top['D']:.3f} [{top['D low']:.3f}, {top['D high']:.3f}]); the "
        f"difference is {resolved} at 95%.{overall}"
    )


def lens(table: pd.DataFrame) -> str:
    """How early the residual stream predicts the full model's next token."""
    agreement = table["agreement"].to_numpy()
    last = len(agreement) - 1
    half = next((i for i, a in enumerate(agreement) if a >= 0.5), None)
    reach = "never within the network" if half is None else f"from layer {half} of {last}"
    return (
        f"Decoded through the final norm and head, the residual stream agrees with the full model's top-1 "
        f"prediction at most {agreement[: max(1, last * 2 // 3)].max():.2f} of the time over the first two thirds "
        f"of the layers and {agreement[-1]:.2f} at the last; it agrees on half the tokens {reach}."
    )


def selection(losses: pd.DataFrame, unpruned: float) -> str:
    """Which strategy costs least before healing, fraction by fraction, and by how much the next one costs more,
    with its 95% interval over the held-out blocks (random: mean and spread over seeds)."""
    parts = []
    for _, rows in losses.groupby("fraction"):
        mean = rows.groupby("strategy", sort=False)["loss"].mean().sort_values(kind="stable")
        best = mean.index[0]
        text = f"{fraction_label(rows.iloc[0])} removed: {best} lowest ({mean[best]:.2f} nats)"
        if len(mean) > 1:
            runner = mean.index[1]
            gap = draws_gap(*(_block_losses(rows, strategy) for strategy in (best, runner)))
            text += f", {runner} next at {mean[runner]:.2f}" + (
                f" ({gap.difference:+.2f} [{gap.low:+.2f}, {gap.high:+.2f}] over the held-out blocks"
                + ("" if gap.outcome == DIFFERENT else ", not resolved")
                + ")"
                if gap is not None
                else ""
            )
        if "similarity" in mean and "similarity" not in mean.index[:2]:
            text += f", similarity {mean['similarity']:.2f}"
        random = rows[rows["strategy"] == "random"]["loss"]
        if len(random) > 1:
            text += f", random {random.mean():.2f} ± {random.std(ddof=1):.2f} over {len(random)} distinct blocks"
        parts.append(text)
    return f"Unpruned: {unpruned:.2f} nats. " + "; ".join(parts) + "."


def _block_losses(rows: pd.DataFrame, strategy: str) -> list[list[float]]:
    """A strategy's per-block held-out losses, one list per row (a seeded strategy: one per draw)."""
    cells = rows.loc[rows["strategy"] == strategy, files.BLOCK_LOSSES] if files.BLOCK_LOSSES in rows else []
    return [files.block_losses_of(cell) for cell in cells]


def headline(table: pd.DataFrame, comparisons: pd.DataFrame, task: str, strategies: Sequence[str]) -> str:
    """The unpruned accuracy, how long it holds and where it reaches chance, per strategy, and each other strategy
    against the similarity block on the same questions (`comparisons`: `study.comparisons`), in the terms of claim
    (c) (`study.claims.read_curve`)."""
    base = table[table["strategy"] == "none"].iloc[0]
    above = "resolved above" if resolved_above_chance(base, task) else "not resolved above"
    lines = [
        f"Unpruned, {base['model']} scores {_accuracy(base, task)} on {int(base[f'{task} n'])} {task} questions "
        f"(chance {base[f'{task} chance']:.2f}), {above} chance."
    ]
    for strategy in strategies:
        reading = read_curve(table, comparisons, task, strategy)
        if not reading.points:
            continue
        held = (
            f"the accuracy is shown equivalent to the unpruned model's (within the margin) up to "
            f"{fraction_label(reading.plateau[-1].row)} removed"
            if reading.plateau
            else "no fraction removed is shown equivalent to the unpruned model"
        )
        drop = next((point for point in reading.points if point.drops), None)
        if drop is not None:
            held += f"; the first resolved drop is at {fraction_label(drop.row)}"
        if reading.collapse is not None:
            end = f"it is at chance from {fraction_label(reading.collapse.row)} on"
        elif reading.first_chance is not None:
            end = f"it is first at chance at {fraction_label(reading.first_chance.row)} but does not stay there"
        else:
            end = "no fraction tried is shown at chance"
        if reading.again:
            end += ", and is above chance again at " + ", ".join(
                f"{fraction_label(p.row)} ({_accuracy(p.row, task)})" for p in reading.again
            )
            end += " (a non-monotone curve)"
        lines.append(f"Removing the {strategy} block, {held} (paired tests), and {end}.")
    lines += [_against_similarity(table, comparisons, task, s) for s in strategies if s != "similarity"]
    return " ".join(line for line in lines if line)


def _against_similarity(table: pd.DataFrame, comparisons: pd.DataFrame, task: str, strategy: str) -> str:
    """A strategy against the similarity block at each number of layers both removed, before healing."""
    parts = []
    for _, row in table[(table["strategy"] == strategy) & (table["stage"] == "pruned")].iterrows():
        paired = find_comparison(comparisons, task, row["fraction"], strategy, "pruned", "similarity")
        if paired is not None:
            parts.append(
                f"{int(row['n'])} layers {paired['difference']:+.3f} [{paired['low']:+.3f}, {paired['high']:+.3f}], "
                f"{paired['outcome']} (p = {paired['p']:.2g}, Holm {paired['p holm']:.2g})"
            )
    if not parts:
        return ""
    lead = f"On the same questions, {strategy} minus the similarity block, at the same number of layers removed: "
    return lead + "; ".join(parts) + "."


def healing(table: pd.DataFrame, comparisons: pd.DataFrame, task: str | None) -> str:
    """For each healed fraction and strategy: the loss and the accuracy before and after healing, and what the
    quantized base alone costs; empty where nothing was healed."""
    if (table["stage"] == "pruned").all():
        return ""
    base = table[table["strategy"] == "none"].iloc[0]
    parts = []
    for (fraction, strategy), rows in table[table["stage"] != "pruned"].groupby(["fraction", "strategy"]):
        pruned = table[(table["strategy"] == strategy) & np.isclose(table["fraction"], fraction)]
        stage = {row["stage"]: row for _, row in pruned.iterrows()} | {r["stage"]: r for _, r in rows.iterrows()}
        text = f"{strategy}, {fraction_label(stage['pruned'])}: loss {stage['pruned']['loss']:.2f}"
        if "quantized" in stage:
            text += f" ({stage['quantized']['loss']:.2f} with the quantized base alone)"
        text += f" -> {stage['healed']['loss']:.2f} nats healed (unpruned {base['loss']:.2f})"
        if stage["healed"]["loss"] < base["loss"]:
            text += (
                ", below the unpruned model (healing trains on other speeches of the same corpus; chapter 3's "
                "controls, held-out text of another domain and the unpruned model healed alike, tell fitting their "
                "domain from restoring the model)"
            )
        if task:
            gain = find_comparison(comparisons, task, fraction, strategy, "healed", "pruned")
            text += f"; {task} {stage['pruned'][task]:.3f} -> {stage['healed'][task]:.3f}"
            if gain is not None:
                text += (
                    f", paired difference {gain['difference']:+.3f} [{gain['low']:+.3f}, {gain['high']:+.3f}], "
                    f"{gain['outcome']} (p = {gain['p']:.2g}, Holm {gain['p holm']:.2g})"
                )
        parts.append(text)
    lead = "Each healed model against the same model pruned (held-out loss in nats; accuracy on the same questions):"
    return "\n".join([lead, "", *(f"- {part}" for part in parts)])


def healing_budget(steps: int, batch_size: int, block_size: int) -> str:
    """This chapter's healing budget against the paper's (`healing.settings.PAPER_SETTINGS`: the same steps and
    batch for every model)."""
    paper = PAPER_SETTINGS["other"]
    sequences = steps * batch_size
    return (
        f"The healing budget here is {steps} steps of {batch_size} sequences of {block_size} tokens: "
        f"{sequences:,} sequences, {sequences * block_size:,} tokens, against the paper's {paper.steps:,} steps of "
        f"{paper.batch_size} C4 sequences ({paper.steps * paper.batch_size:,} sequences, "
        f"{paper.steps * paper.batch_size / sequences:,.0f} times as many, each longer). Conclusions about healing "
        f"below are about this budget."
    )


def controls(table: pd.DataFrame) -> str:
    """What healing wins back on each held-out domain, net of what the unpruned model healed alike gains there
    (`study.steps.healing_controls`: one row per corpus, the healing corpus first)."""
    first = table.iloc[0]
    parts = []
    for _, row in table.iterrows():
        found = net_recovery(row)
        where = "held-out text of the healing corpus" if row["domain"] == "healing" else "text healing never saw"
        parts.append(
            f"on {row['corpus']} ({where}) pruning costs {found['gap']:.2f} nats; healing the pruned model wins back "
            f"{row['pruned'] - row['pruned + healed']:.2f}, the unpruned model healed alike gains "
            f"{_signed(found['control'])}, so healing repairs {_signed(found['net'])} nats net "
            f"(95% interval over the held-out blocks {_signed(row['net gain low'])} to "
            f"{_signed(row['net gain high'])}), "
            + (
                f"{found['share']:.0%} of what pruning cost"
                if found["gap"] > MARGINS["loss"].value
                else f"of a cost within the {MARGINS['loss'].value:.2f}-nats margin (no share to read)"
            )
        )
    lead = f"Removing {int(first['n'])} of {int(first['model layers'])} layers ({first['strategy']}): "
    return lead + "; ".join(parts) + "."


def _numbers(values: Sequence[int]) -> str:
    return ", ".join(str(int(value)) for value in values)


def headline_healing(
    table: pd.DataFrame, comparisons: pd.DataFrame, task: str, heal_layers: Sequence[int], profile: str = "paper"
) -> str:
    """Where the headline model's healed points lie against its collapse (claim (d) needs accuracy left to
    recover), or that it is not healed, and where the named book profile heals it instead when its points differ."""
    from .runner import load_profile

    reading = read_curve(table, comparisons, task, "similarity")
    collapse = None if reading.collapse is None else int(reading.collapse.row["n"])
    layers = int(table["model layers"].iloc[0])
    before = [n for n in heal_layers if collapse is None or n < collapse]
    where = (
        "never at chance in the grid"
        if reading.collapse is None
        else f"at chance from {fraction_label(reading.collapse.row)} on"
    )
    model = table["model"].iloc[0]
    if not heal_layers:
        text = f"{model} is not healed in this build; with the similarity block its {task} accuracy is {where}"
    else:
        text = (
            f"{model} is healed at n = {_numbers(heal_layers)} of its {layers} layers; with the similarity block its "
            f"{task} accuracy is {where}, so "
        )
        if collapse is None:
            text += "no healed point lies past a collapse"
        elif before:
            text += f"n = {_numbers(before)} {'lies' if len(before) == 1 else 'lie'} before the collapse"
        else:
            text += (
                "every healed point lies at or past the collapse, where healing cannot show how much accuracy it "
                "restores"
            )
    other = list(load_profile(profile)["chapters"].get("04_results", {}).get("headline_heal_layers", []))
    if sorted(other) != sorted(heal_layers):
        early = [n for n in other if collapse is not None and n < collapse]
        text += f". The {profile} profile heals it at n = {_numbers(other)}"
        text += f" (n = {_numbers(early)} before the collapse seen here)" if early else ""
        text += "; this build leaves those healings out to keep within its time budget" if not before else ""
    return text + "."


def before_after(table: pd.DataFrame) -> str:
    """The held-out loss of each model of chapter 3's table, in order."""
    losses = ", ".join(f"{row['model']} {row['loss']:.2f}" for _, row in table.iterrows())
    return f"Held-out loss (nats): {losses}."


def ladder(results: pd.DataFrame, comparisons: pd.DataFrame, task: str) -> str:
    """Per model of the size ladder: the unpruned accuracy, how long it is shown to hold and where it is at chance
    (claim (c)'s reading, fractions as actually removed)."""
    parts = []
    for model, rows in results.groupby("model", sort=False):
        base = rows[rows["strategy"] == "none"].iloc[0]
        reading = read_curve(rows, comparisons[comparisons["model"] == model], task)
        held = (
            "no fraction shown equivalent"
            if not reading.plateau
            else f"equivalent up to {fraction_label(reading.plateau[-1].row)}"
        )
        end = (
            f"grid up to {removed(reading.points[-1].row):.0%} reaches no collapse"
            if reading.collapse is None and reading.points
            else f"at chance from {fraction_label(reading.collapse.row)} on"
            if reading.collapse is not None
            else "nothing removed"
        )
        if reading.again:
            end += (
                f" (at chance at {fraction_label(reading.first_chance.row)}, above chance again at "
                + ", ".join(f"{fraction_label(p.row)} ({_accuracy(p.row, task)})" for p in reading.again)
                + ": non-monotone)"
            )
        parts.append(f"{model}: {_accuracy(base, task)} unpruned, {held} (paired tests), {end}")
    return f"On {task}: " + "; ".join(parts) + "."


def precision(rows: pd.DataFrame) -> str:
    """What computing in bfloat16 instead of float32 changes, from `speed.precision_agreement`'s rows."""
    values = dict(zip(rows["measure"], rows["value"], strict=True))

    def value(prefix: str) -> float:
        (found,) = [number for measure, number in values.items() if measure.startswith(prefix)]
        return float(found)

    sizes = next(measure for measure in values if measure.startswith("n of 1.."))
    total = int(sizes.removeprefix("n of 1..").split()[0])
    questions = re.search(r"the same (\d+) questions", " ".join(rows["detail"].astype(str))).group(1)
    accuracy = {dtype: value(f"ARC-Easy accuracy, {dtype}") for dtype in ("float32", "bfloat16")}
    only = {dtype: int(value(f"questions right only in {dtype}")) for dtype in ("float32", "bfloat16")}
    p = value("McNemar")
    return (
        f"In bfloat16 the distances move by at most {value('max |D'):.1e}, and the block chosen is the same for "
        f"{int(values[sizes])} of the {total} block sizes. The held-out loss changes by "
        f"{value('held-out loss, bfloat16 -'):+.4f} nats. On the same {questions} ARC-Easy questions the accuracy "
        f"is {accuracy['float32']:.3f} in float32 and {accuracy['bfloat16']:.3f} in bfloat16 ({only['float32']} "
        f"questions right only in float32, {only['bfloat16']} only in bfloat16; McNemar's p = {p:.2g}): "
        f"{'no' if p >= 0.05 else 'a'} difference resolved at the 5% level."
    )


def _signed(value: float) -> str:
    """A signed value to two decimals, with no "-0.00" for a value that rounds to zero."""
    return f"{round(value, 2) + 0.0:+.2f}"
