"""The ledger of the paper's claims and their criteria: for each claim and each model of the study, a verdict
computed from the result files the chapters wrote, the evidence with its intervals, and where the figure is.
`layerprune check-book` recomputes it from the result files and compares it with the ledger the book shows; the
book renders it (`layerprune.book.ledger`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import files
from .statistics import excludes_zero, wilson_interval

HELD, PARTLY, NOT_HELD, UNTESTABLE = "held", "partly held", "did not hold", "not testable here"
CLAIMS = {
    "a": "the most alike blocks sit deep in the network",
    "b": "the final layer is distinct: it changes the residual stream more than any other layer of the deeper half",
    "c": "QA accuracy holds, then collapses to chance at a model-dependent fraction of layers removed",
    "d": "healing restores the held-out loss far more than QA accuracy",
    "e": "before healing the similarity block beats the last-layers heuristic; after healing they meet",
    "f": "larger models hold their accuracy to a larger fraction of layers removed",
}
CHAPTERS = {files.chapter_prefix(chapter): chapter for chapter in files.READS["07_claims"]}  # where each is shown
DEEP = 0.5  # a block is deep when it starts in the second half of the layers it can start at


@dataclass(frozen=True)
class Verdict:
    """One line of the ledger."""

    claim: str
    statement: str
    model: str
    verdict: str
    evidence: str
    figure: str


def ledger(results: str | Path) -> list[Verdict]:
    """Every claim for every model the result files cover (claims a-e per model, f across models)."""
    tables = _Tables(Path(results))
    verdicts: list[Verdict] = []
    for claim, judge in (("a", _deep_blocks), ("b", _final_layer), ("c", _collapse), ("d", _healing_gain),
                         ("e", _strategies)):  # fmt: skip
        for model in tables.models():
            verdict, evidence, figure = judge(tables, model)
            verdicts.append(Verdict(claim, CLAIMS[claim], model, verdict, evidence, figure))
    verdict, evidence, figure = _size_ladder(tables)
    verdicts.append(Verdict("f", CLAIMS["f"], "all", verdict, evidence, figure))
    return verdicts


def ledger_table(results: str | Path) -> pd.DataFrame:
    """The ledger as a table (what the book shows and saves)."""
    return pd.DataFrame([asdict(v) for v in ledger(results)])


class _Tables:
    """The result files, read once; a missing file reads as an empty table."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._cache: dict[str, pd.DataFrame] = {}

    def get(self, name: str) -> pd.DataFrame:
        if name not in self._cache:
            path = self.root / name
            frame = pd.read_csv(path) if path.is_file() else pd.DataFrame()
            if not frame.empty:
                frame["chapter"] = CHAPTERS[files.chapter_prefix(name)]
            self._cache[name] = frame
        return self._cache[name]

    def blocks(self) -> pd.DataFrame:
        return _concat(self.get(files.BLOCKS), self.get(files.LADDER_BLOCKS))

    def layers(self) -> pd.DataFrame:
        return _concat(self.get(files.SINGLE_LAYERS), self.get(files.LADDER_SINGLE_LAYERS))

    def sweeps(self) -> pd.DataFrame:
        return _concat(self.get(files.HEADLINE), self.get(files.RESULTS), self.get(files.LADDER))

    def comparisons(self) -> pd.DataFrame:
        names = (files.HEADLINE_COMPARISONS, files.COMPARISONS, files.LADDER_COMPARISONS)
        return _concat(*(self.get(name) for name in names))

    def models(self) -> list[str]:
        names = [frame["model"] for frame in (self.blocks(), self.layers(), self.sweeps()) if "model" in frame]
        return list(dict.fromkeys(pd.concat(names).tolist())) if names else []


def _concat(*frames: pd.DataFrame) -> pd.DataFrame:
    """The rows of every frame; a model in several keeps only the first frame's rows."""
    kept: list[pd.DataFrame] = []
    seen: set[str] = set()
    for frame in frames:
        if frame.empty or "model" not in frame:
            continue
        kept.append(frame[~frame["model"].isin(seen)])
        seen |= set(frame["model"])
    return pd.concat(kept, ignore_index=True) if kept else pd.DataFrame()


def _of(frame: pd.DataFrame, model: str) -> pd.DataFrame:
    return frame[frame["model"] == model] if "model" in frame else frame.iloc[0:0]


def _deep_blocks(tables: _Tables, model: str) -> tuple[str, str, str]:
    rows = _of(tables.blocks(), model)
    rows = rows[(rows["fraction"] >= 0.1) & (rows["fraction"] <= 0.5)] if not rows.empty else rows
    if rows.empty:
        return UNTESTABLE, "no profile of this model", ""
    depth = rows["start"] / (rows["layers"] - rows["n"])
    deep = float((depth >= DEEP).mean())
    stable = float(rows["same start"].mean())
    evidence = (
        f"l*(n) for n = {rows['n'].min()}..{rows['n'].max()} (10-50% of {int(rows['layers'].iloc[0])} layers): "
        f"{', '.join(map(str, rows['start'].astype(int)))}; {deep:.0%} of these blocks start in the deeper half; "
        f"the same l* in {stable:.0%} of bootstrap resamples of the profiled sequences (mean over n)"
    )
    verdict = HELD if deep >= 0.75 else NOT_HELD if deep <= 0.25 else PARTLY
    return verdict, evidence, _figure(rows)


def _final_layer(tables: _Tables, model: str) -> tuple[str, str, str]:
    rows = _of(tables.layers(), model).sort_values("layer") if "model" in tables.layers() else pd.DataFrame()
    if rows.empty:
        return UNTESTABLE, "no profile of this model", ""
    final, top = rows.iloc[-1], largest_deep_change(rows)
    evidence = (
        f"D[1, final] = {final['D']:.3f} [{final['D low']:.3f}, {final['D high']:.3f}]; the largest of the other "
        f"layers of the deeper half: layer {int(top['layer'])}, {top['D']:.3f} [{top['D low']:.3f}, "
        f"{top['D high']:.3f}]"
    )
    if final["D low"] > top["D high"]:
        return HELD, evidence, _figure(rows)
    return (PARTLY if final["D"] > top["D"] else NOT_HELD), evidence, _figure(rows)


def largest_deep_change(single: pd.DataFrame) -> pd.Series:
    """The row of `single` (one row per layer, in order) with the largest D[1, l] among the layers of the deeper
    half other than the final one: the layers the final one is compared with in claim (b)."""
    layers = len(single)
    deep = single.iloc[layers // 2 : layers - 1]
    return deep.loc[deep["D"].idxmax()]


def _qa_task(rows: pd.DataFrame) -> str | None:
    """The QA task a claim is judged on: MMLU where the model is above chance unpruned, else ARC-Easy."""
    for task in ("mmlu", "arc_easy"):
        if task in rows and _above_chance(rows, task):
            return task
    return None


def _unpruned(rows: pd.DataFrame) -> pd.Series:
    return rows[rows["strategy"] == "none"].iloc[0]


def _above_chance(rows: pd.DataFrame, task: str) -> bool:
    base = rows[rows["strategy"] == "none"]
    if base.empty or pd.isna(base.iloc[0][task]):
        return False
    return not reaches_chance(base.iloc[0], task)


def accuracy_interval(row: pd.Series, task: str) -> tuple[float, float]:
    """The 95% Wilson interval of a result row's accuracy on `task` (columns `task` and "`task` n")."""
    count = int(row[f"{task} n"])
    return wilson_interval(row[task] * count, count)


def reaches_chance(row: pd.Series, task: str) -> bool:
    """Whether a result row's accuracy on `task` is at chance: its 95% Wilson interval reaches the chance level."""
    return accuracy_interval(row, task)[0] <= row[f"{task} chance"]


def _curve(rows: pd.DataFrame, strategy: str, stage: str = "pruned") -> pd.DataFrame:
    picked = rows[((rows["strategy"] == strategy) & (rows["stage"] == stage)) | (rows["strategy"] == "none")]
    return picked.sort_values("fraction")


def collapse_point(
    rows: pd.DataFrame, comparisons: pd.DataFrame, task: str, strategy: str = "similarity"
) -> tuple[float | None, float | None]:
    """(the last fraction of the plateau, the first fraction at chance) of a strategy's curve before healing,
    None where there is none: the plateau ends before the first fraction whose paired difference from the unpruned
    model is resolved below 0; a fraction is at chance when its 95% Wilson interval reaches the chance level."""
    plateau, collapse, dropped = None, None, False
    for _, row in _curve(rows, strategy).iterrows():
        if row["strategy"] == "none":
            continue
        drop = find_comparison(comparisons, task, row["fraction"], strategy, "pruned", "unpruned")
        dropped = dropped or (drop is not None and drop["high"] < 0)
        plateau = plateau if dropped else row["fraction"]
        if collapse is None and reaches_chance(row, task):
            collapse = row["fraction"]
    return plateau, collapse


def above_chance_again(rows: pd.DataFrame, task: str, collapse: float, strategy: str = "similarity") -> pd.DataFrame:
    """The points of a strategy's curve before healing, past its collapse, whose 95% interval clears chance again."""
    later = _curve(rows, strategy)
    later = later[(later["strategy"] == strategy) & (later["fraction"] > collapse)]
    return later[[not reaches_chance(row, task) for _, row in later.iterrows()]]


def _collapse(tables: _Tables, model: str) -> tuple[str, str, str]:
    rows = _of(tables.sweeps(), model)
    task = _qa_task(rows) if not rows.empty else None
    if task is None:
        return UNTESTABLE, "the unpruned model is not resolved above chance on MMLU or ARC-Easy", _figure(rows)
    comparisons = _of(tables.comparisons(), model)
    plateau, collapse = collapse_point(rows, comparisons, task)
    base = _unpruned(rows)
    evidence = (
        f"{task}: {base[task]:.3f} unpruned ({int(base[f'{task} n'])} questions, chance {base[f'{task} chance']:.2f}); "
        + ("no fraction removed keeps it (every one is resolved below it, paired)" if plateau is None
           else f"not resolved below it up to {plateau:.0%} removed")
        + ("; it never reaches chance in the grid" if collapse is None else f"; first at chance at {collapse:.0%}")
    )  # fmt: skip
    again = above_chance_again(rows, task, collapse) if collapse is not None else rows.iloc[0:0]
    if not again.empty:
        evidence += "; above chance again at " + ", ".join(f"{f:.0%}" for f in again["fraction"])
    if plateau is not None and collapse is not None and collapse > plateau:
        return HELD, evidence, _figure(rows)
    return (PARTLY if collapse is not None else NOT_HELD), evidence, _figure(rows)


def _healing_gain(tables: _Tables, model: str) -> tuple[str, str, str]:
    rows = _of(tables.sweeps(), model)
    healed = rows[rows["stage"] == "healed"] if "stage" in rows else rows.iloc[0:0]
    if healed.empty:
        return UNTESTABLE, "this model was not healed", _figure(rows)
    base = _unpruned(rows)
    task = _qa_task(rows)
    parts, loss_wins = [], []
    for row in healed.itertuples():
        pruned = rows[(rows["strategy"] == row.strategy) & (rows["stage"] == "pruned")]
        pruned = pruned[np.isclose(pruned["fraction"], row.fraction)].iloc[0]
        loss_gain = _recovered(pruned["loss"], row.loss, base["loss"])
        text = f"{row.strategy} {row.fraction:.0%}: loss {loss_gain:.0%} recovered"
        if task:
            qa_gain = _recovered(pruned[task], getattr(row, task), base[task])
            text += f", {task} {qa_gain:.0%}"
            loss_wins.append(loss_gain > qa_gain)
        parts.append(text)
    evidence = "; ".join(parts) + ("" if task else " (QA at chance unpruned: only the loss can be judged)")
    if not task:
        return UNTESTABLE, evidence, _figure(rows)
    share = float(np.mean(loss_wins))
    return (HELD if share == 1 else NOT_HELD if share == 0 else PARTLY), evidence, _figure(rows)


def _recovered(pruned: float, healed: float, unpruned: float) -> float:
    """The share of what pruning lost that healing won back (for a loss or an accuracy alike)."""
    lost = pruned - unpruned
    return float((pruned - healed) / lost) if lost else float("nan")


def _strategies(tables: _Tables, model: str) -> tuple[str, str, str]:
    rows = _of(tables.sweeps(), model)
    if rows.empty or not {"similarity", "last"} <= set(rows["strategy"]):
        return UNTESTABLE, "similarity and last were not both run", _figure(rows)
    task, comparisons = _qa_task(rows), _of(tables.comparisons(), model)
    parts, before_wins, meets = [], [], []
    for fraction in sorted(set(rows[rows["strategy"] == "similarity"]["fraction"])):
        at = rows[np.isclose(rows["fraction"], fraction)]
        loss = {(r.strategy, r.stage): r.loss for r in at.itertuples()}
        if ("similarity", "pruned") not in loss or ("last", "pruned") not in loss:
            continue
        gap = loss[("last", "pruned")] - loss[("similarity", "pruned")]
        text = f"{fraction:.0%}: loss of last - similarity = {gap:+.2f} nats before healing"
        before = find_comparison(comparisons, task, fraction, "last", "pruned", "similarity")
        if before is not None:
            text += f" ({task} {before['difference']:+.3f} [{before['low']:+.3f}, {before['high']:+.3f}])"
        before_wins.append(gap > 0 and (before is None or before["low"] <= 0))  # QA not resolved for last
        if ("similarity", "healed") in loss and ("last", "healed") in loss:
            text += f", {loss[('last', 'healed')] - loss[('similarity', 'healed')]:+.2f} after"
            healed = find_comparison(comparisons, task, fraction, "last", "healed", "similarity")
            if healed is not None:
                text += (
                    f"; healed {task}, last - similarity = {healed['difference']:+.3f} "
                    f"[{healed['low']:+.3f}, {healed['high']:+.3f}]"
                )
                if all(reaches_chance(row, task) for _, row in at[at["stage"] == "healed"].iterrows()):
                    text += " (both healed models at chance: meeting there says nothing)"
                else:
                    meets.append(not excludes_zero(healed["low"], healed["high"]))
        parts.append(text)
    evidence = "; ".join(parts)
    beats = bool(before_wins) and all(before_wins)
    if not meets:
        untested = "; 'they meet' is untested (no healed pair above chance on QA)"
        return (PARTLY if beats else NOT_HELD), evidence + untested, _figure(rows)
    return (HELD if beats and all(meets) else PARTLY if beats or any(meets) else NOT_HELD), evidence, _figure(rows)


def find_comparison(
    comparisons: pd.DataFrame, task: str | None, fraction: float, strategy: str, stage: str, versus: str
) -> pd.Series | None:
    """The paired comparison of `strategy` at `stage` against `versus` on `task` at `fraction`, if one was made."""
    if task is None or comparisons.empty:
        return None
    match = comparisons[
        (comparisons["task"] == task)
        & (comparisons["strategy"] == strategy)
        & (comparisons["stage"] == stage)
        & (comparisons["versus"] == versus)
        & np.isclose(comparisons["fraction"], fraction)
    ]
    return None if match.empty else match.iloc[0]


def _size_ladder(tables: _Tables) -> tuple[str, str, str]:
    """Judged on the size ladder (chapter 5), on one task for every model: the first of ARC-Easy and MMLU on which
    at least two models are resolved above chance unpruned."""
    ladder, comparisons = tables.get(files.LADDER), tables.get(files.LADDER_COMPARISONS)
    models = list(dict.fromkeys(ladder["model"])) if "model" in ladder else []
    for task in ("arc_easy", "mmlu"):
        able = [m for m in models if task in ladder and _above_chance(_of(ladder, m), task)]
        if len(able) >= 2:
            break
    else:
        return UNTESTABLE, "fewer than two models of the ladder are resolved above chance on one task", ""
    points = []
    for model in able:
        rows = _of(ladder, model)
        _, collapse = collapse_point(rows, _of(comparisons, model), task)
        points.append((int(_unpruned(rows)["parameters"]), model, collapse))
    points.sort()
    evidence = f"{task}: " + "; ".join(
        f"{model} ({size / 1e6:.0f}M) " + ("no collapse in the grid" if c is None else f"first at chance at {c:.0%}")
        for size, model, c in points
    )
    ends = [1.0 if c is None else c for *_, c in points]
    return (HELD if ends == sorted(ends) and ends[0] < ends[-1] else NOT_HELD), evidence, _figure(ladder)


def _figure(rows: pd.DataFrame) -> str:
    """The chapter page whose figure shows the rows (from their "chapter" column)."""
    return f"{rows['chapter'].iloc[0]}.html" if "chapter" in rows and not rows.empty else ""


def check_ledger(results: str | Path, shown: str | Path) -> list[str]:
    """The ledger lines that differ between the saved ledger `shown` and the one recomputed from `results` (an
    empty list when they agree)."""
    fresh = ledger_table(results).astype(str)
    saved = pd.read_csv(shown, dtype=str, keep_default_na=False)
    if list(saved.columns) != list(fresh.columns) or len(saved) != len(fresh):
        return [f"{shown} has {len(saved)} lines, the result files give {len(fresh)}"]
    differ = (saved.values != fresh.values).any(axis=1)
    return [f"claim {row.claim} for {row.model}: {row.verdict}" for row in fresh[differ].itertuples()]
