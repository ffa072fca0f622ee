"""The ledger of the paper's claims: for each claim and each model of the study, a verdict by the claim's criterion
(`criteria.CRITERIA`, written before the results) computed from the result files the chapters wrote, with the
margin, the test, the p-value and the power behind it, the evidence with its intervals, and where the figure is.
`layerprune check-book` recomputes it from the result files and compares it with the ledger the book shows; the
book renders it (`layerprune.book.ledger`)."""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import files
from .criteria import CLAIMS as CLAIMS
from .criteria import CRITERIA as CRITERIA
from .criteria import DEEP as DEEP
from .criteria import DEEP_SHARE, HELD, INCONCLUSIVE, NOT_HELD, UNTESTABLE
from .criteria import VERDICTS as VERDICTS
from .criteria import criteria_table as criteria_table
from .curves import (
    Point,
    _above_chance,
    _unpruned,
    collapse_span,
    find_comparison,
    fraction_label,
    is_at_chance,
    read_curve,
    removed,
    surely_before,
)
from .curves import above_chance_again as above_chance_again
from .curves import accuracy_interval as accuracy_interval
from .curves import collapse_point as collapse_point
from .curves import resolved_above_chance as resolved_above_chance
from .recovery import controls_at, recovered, recovery_verdict
from .statistics import DIFFERENT, EQUIVALENT, MARGINS, draws_gap

_ACC, _LOSS = MARGINS["accuracy"], MARGINS["loss"]
CHAPTERS = {files.chapter_prefix(chapter): chapter for chapter in files.READS["07_claims"]}  # where each is shown


@dataclass(frozen=True)
class Verdict:
    """One line of the ledger: the verdict, the margin and test of its criterion, the p-value it hinges on and the
    smallest difference the comparisons behind it could detect (80% power, two-sided 5%), as text ("" where the
    criterion has none), the evidence and the chapter that shows the figure."""

    claim: str
    statement: str
    model: str
    verdict: str
    margin: str
    test: str
    p: str
    power: str
    evidence: str
    figure: str


@dataclass
class _Judged:
    verdict: str
    evidence: str
    figure: str
    p: float | None = None
    power: float | None = None


def ledger(results: str | Path) -> list[Verdict]:
    """Every claim for every model the result files cover (claims a-e per model, f across models)."""
    tables = _Tables(Path(results))
    verdicts: list[Verdict] = []
    judges = (("a", _deep_blocks), ("b", _final_layer), ("c", _collapse), ("d", _healing_gain), ("e", _strategies))
    for claim, judge in judges:
        for model in tables.models():
            verdicts.append(_verdict(claim, model, judge(tables, model)))
    verdicts.append(_verdict("f", "all", _size_ladder(tables)))
    return verdicts


def _verdict(claim: str, model: str, judged: _Judged) -> Verdict:
    criterion = CRITERIA[claim]
    p = "" if judged.p is None or np.isnan(judged.p) else f"{judged.p:.3f}" if judged.p >= 0.001 else f"{judged.p:.0e}"
    power = "" if judged.power is None or np.isnan(judged.power) else f"{judged.power:.3f}"
    return Verdict(
        claim, CLAIMS[claim], model, judged.verdict, criterion.margin, criterion.test, p, power, judged.evidence,
        judged.figure,
    )  # fmt: skip


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

    def losses(self) -> pd.DataFrame:
        """Chapter 2's held-out losses of every strategy (random: one row per distinct block)."""
        return self.get(files.PRUNED_LOSSES)

    def controls(self) -> pd.DataFrame:
        """Chapter 3's healing controls: one row per block and domain (`steps.healing_controls`)."""
        return self.get(files.CONTROLS)

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


def _healed(rows: pd.DataFrame) -> pd.DataFrame:
    """The healed models' rows of a sweep's `rows` (none where nothing was healed)."""
    return rows[rows["stage"] == "healed"] if "stage" in rows else rows.iloc[0:0]


def _deep_blocks(tables: _Tables, model: str) -> _Judged:
    rows = _of(tables.blocks(), model)
    rows = rows[(rows["fraction"] >= 0.1) & (rows["fraction"] <= 0.5)] if not rows.empty else rows
    if rows.empty:
        return _Judged(UNTESTABLE, "no profile of this model", "")
    layers = int(rows["layers"].iloc[0])
    deep = rows["start"] >= DEEP * rows["layers"]
    share = float(deep.mean())
    stable = float(rows["same start"].mean())
    positions = ", ".join(f"{int(r.start)}..{int(r.start + r.n - 1)}" for r in rows.itertuples())
    evidence = (
        f"the most alike block l*..l*+n-1 for n = {rows['n'].min()}..{rows['n'].max()} (10-50% of {layers} layers, "
        f"numbered 0..{layers - 1}): {positions}; {int(deep.sum())} of {len(rows)} start at or past layer "
        f"{DEEP * layers:g} (L/2); the same l* in {stable:.0%} of bootstrap resamples of the profiled sequences "
        f"(mean over n)"
    )
    verdict = HELD if share >= DEEP_SHARE[0] else NOT_HELD if share < DEEP_SHARE[1] else INCONCLUSIVE
    return _Judged(verdict, evidence, _figure(rows))


def _final_layer(tables: _Tables, model: str) -> _Judged:
    rows = _of(tables.layers(), model).sort_values("layer") if "model" in tables.layers() else pd.DataFrame()
    if rows.empty:
        return _Judged(UNTESTABLE, "no profile of this model", "")
    final, top = rows.iloc[-1], largest_deep_change(rows)
    evidence = (
        f"D[1, final] = {final['D']:.3f} [{final['D low']:.3f}, {final['D high']:.3f}]; the largest of the other "
        f"layers of the deeper half: layer {int(top['layer'])}, {top['D']:.3f} [{top['D low']:.3f}, "
        f"{top['D high']:.3f}]"
    )
    if final["D low"] > top["D high"]:
        return _Judged(HELD, evidence, _figure(rows))
    return _Judged(INCONCLUSIVE if final["D"] > top["D"] else NOT_HELD, evidence, _figure(rows))


def largest_deep_change(single: pd.DataFrame) -> pd.Series:
    """The row of `single` (one row per layer, in order) with the largest D[1, l] among the layers of the deeper
    half other than the final one: the layers the final one is compared with in claim (b)."""
    layers = len(single)
    deep = single.iloc[layers // 2 : layers - 1]
    return deep.loc[deep["D"].idxmax()]


def _qa_task(rows: pd.DataFrame) -> str | None:
    """The QA task a claim is judged on: MMLU where the model is resolved above chance unpruned, else ARC-Easy."""
    for task in ("mmlu", "arc_easy"):
        if task in rows and _above_chance(rows, task):
            return task
    return None


def _describe(point: Point, task: str, asked: int) -> str:
    """'4/30 (13%) 0.540, -0.010 [-0.040, +0.020] equivalent' for one point of a curve (with the number of
    questions compared where it is not `asked`, the unpruned model's)."""
    text = f"{fraction_label(point.row)} {point.row[task]:.3f}"
    paired = point.comparison
    if paired is not None:
        text += f", {paired['difference']:+.3f} [{paired['low']:+.3f}, {paired['high']:+.3f}] {paired['outcome']}"
        if int(paired["questions"]) != asked:
            text += f" on {int(paired['questions'])} questions"
        if "graded outcome" in paired and not pd.isna(paired.get("graded outcome")):
            text += f" (graded {paired['graded difference']:+.3f}, {paired['graded outcome']})"
    if point.at_chance:
        text += ", at chance"
    return text


def _collapse(tables: _Tables, model: str) -> _Judged:
    rows = _of(tables.sweeps(), model)
    task = _qa_task(rows) if not rows.empty else None
    if task is None:
        return _Judged(UNTESTABLE, "the unpruned model is not resolved above chance on MMLU or ARC-Easy", _figure(rows))
    reading = read_curve(rows, _of(tables.comparisons(), model), task)
    base = _unpruned(rows)
    if not reading.points:
        return _Judged(UNTESTABLE, "no fraction of layers was removed", _figure(rows))
    asked = int(base[f"{task} n"])
    evidence = (
        f"{task}: {base[task]:.3f} unpruned ({asked} questions, chance {base[f'{task} chance']:.2f}); removed, "
        "against the unpruned model: " + "; ".join(_describe(point, task, asked) for point in reading.points)
    )
    first = reading.points[0]
    tested = [p.comparison for p in (reading.plateau or [first]) if p.comparison is not None]
    p_equivalence = max((float(c["p equivalence"]) for c in tested), default=None)
    power = max((float(c["detectable"]) for c in tested), default=None)
    if first.falls:
        return _Judged(
            NOT_HELD, evidence + f"; no plateau: {fraction_label(first.row)} already loses more than the margin "
            f"(90% interval up to {first.comparison['high 90']:+.3f})", _figure(rows),
            p=float(first.comparison["p holm"]), power=power,
        )  # fmt: skip
    reasons = []
    if reading.plateau:
        evidence += f"; holds (equivalent) up to {fraction_label(reading.plateau[-1].row)}"
    elif first.drops:
        reasons.append(
            f"the first fraction removed drops (resolved), but a loss beyond the margin ({_ACC.value:.2f}) is not "
            f"shown: its 90% interval reaches {first.comparison['high 90']:+.3f}"
        )
    else:
        reasons.append(
            f"the first fraction removed is neither shown equivalent (margin +-{_ACC.value:.2f}) nor shown to drop"
        )
    if reading.collapse is not None:
        evidence += f"; at chance from {fraction_label(reading.collapse.row)} on"
    else:
        reasons.append("no fraction of the grid is at chance with every larger one at chance too")
    if reading.again:
        reasons.append(
            f"non-monotone: at chance at {fraction_label(reading.first_chance.row)}, resolved above chance again at "
            + ", ".join(fraction_label(point.row) for point in reading.again)
        )
    if reading.collapse is not None and reading.plateau and removed(reading.collapse.row) <= reading.plateau_end:
        reasons.append("the collapse does not follow the plateau")
    if not reasons:
        return _Judged(HELD, evidence, _figure(rows), p=p_equivalence, power=power)
    return _Judged(INCONCLUSIVE, evidence + "; " + "; ".join(reasons), _figure(rows), p=p_equivalence, power=power)


def _healing_gain(tables: _Tables, model: str) -> _Judged:
    rows = _of(tables.sweeps(), model)
    healed = _healed(rows)
    if healed.empty:
        return _Judged(UNTESTABLE, "this model was not healed", _figure(rows))
    base = _unpruned(rows)
    task = _qa_task(rows)
    comparisons = _of(tables.comparisons(), model)
    controls = _of(tables.controls(), model)
    parts, judged, ps, powers = [], [], [], []
    for _, row in healed.iterrows():
        pruned = rows[(rows["strategy"] == row["strategy"]) & (rows["stage"] == "pruned")]
        pruned = pruned[np.isclose(pruned["fraction"], row["fraction"])].iloc[0]
        lost = bool(task) and pruned[task] < base[task]  # a share of no loss is undefined
        qa_gain = recovered(pruned[task], row[task], base[task]) if lost else float("nan")
        domains = controls_at(controls, row)
        if domains is None:
            loss_gain = recovered(pruned["loss"], row["loss"], base["loss"])
            text = f"{row['strategy']} {fraction_label(row)}: loss {loss_gain:.0%} recovered (no control)"
        else:
            text = f"{row['strategy']} {fraction_label(row)}: " + ", ".join(
                f"{d['corpus']} ({d['domain']} domain) loss {d['share']:.0%} recovered net of the control "
                f"({d['net']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}] nats of {d['gap']:.2f}; the unpruned model "
                f"healed alike {d['control']:+.2f})"
                for d in domains.values()
            )
        if task:
            text += f", {task} {qa_gain:.0%}"
            gain = find_comparison(comparisons, task, row["fraction"], row["strategy"], "healed", "pruned")
            qa_share = (float("nan"), float("nan"))
            if gain is not None:
                text += f" ({gain['difference']:+.3f} [{gain['low']:+.3f}, {gain['high']:+.3f}], {gain['outcome']})"
                if domains is not None:  # the test and power of the points the verdict reads
                    ps.append(float(gain["p holm"]))
                    powers.append(float(gain["detectable"]))
                if lost:
                    qa_share = (gain["low"] / (base[task] - pruned[task]), gain["high"] / (base[task] - pruned[task]))
            if domains is not None:
                verdict, why = recovery_verdict(domains["healing"], domains["other"], qa_gain, qa_share)
                text += f": {verdict}" + (f" ({why})" if why else "")
                judged.append(verdict)
        parts.append(text)
    evidence = "; ".join(parts)
    p, power = min(ps, default=None), max(powers, default=None)
    if not task:
        return _Judged(UNTESTABLE, evidence + " (QA at chance unpruned: only the loss can be judged)", _figure(rows))
    if not judged:
        return _Judged(
            UNTESTABLE, evidence + "; no healed point has controls (the unpruned model healed alike and held-out text "
            "of another domain, chapter 3)", _figure(rows),
        )  # fmt: skip
    verdict = judged[0] if len(set(judged)) == 1 else INCONCLUSIVE
    return _Judged(verdict, evidence, _figure(rows), p=p, power=power)


def _loss_baselines(tables: _Tables, model: str) -> dict[float, dict[str, list[tuple[float, list[float]]]]]:
    """Held-out loss before healing of every strategy at every fraction actually removed, with its per-block losses:
    {fraction: {strategy: [(loss, block losses)]}} (random: one per distinct block), from chapter 2's file where it
    covers the model, else from the sweep's rows."""
    losses = _of(tables.losses(), model)
    if losses.empty:
        losses = _of(tables.sweeps(), model)
        losses = losses[(losses["stage"] == "pruned") & (losses["strategy"] != "none")] if not losses.empty else losses
    found: dict[float, dict[str, list[tuple[float, list[float]]]]] = {}
    seen: set[tuple] = set()
    for _, row in losses.iterrows():
        key = (round(removed(row), 6), row["strategy"], str(row.get("layers", "")))
        if key in seen:  # a block drawn twice counts once
            continue
        seen.add(key)
        blocks = files.block_losses_of(row.get(files.BLOCK_LOSSES))
        found.setdefault(key[0], {}).setdefault(row["strategy"], []).append((float(row["loss"]), blocks))
    return found


def _strategies(tables: _Tables, model: str) -> _Judged:
    rows = _of(tables.sweeps(), model)
    by_fraction = _loss_baselines(tables, model)
    if not any("similarity" in s and len(s) > 1 for s in by_fraction.values()):
        return _Judged(UNTESTABLE, "the similarity block and no other strategy were run", _figure(rows))
    task, comparisons = (_qa_task(rows) if not rows.empty else None), _of(tables.comparisons(), model)
    margin = _LOSS.value
    parts, beats, loses, meets, ps, powers = [], [], [], [], [], []
    with_last = {round(removed(r), 6) for _, r in rows.iterrows() if r["strategy"] == "last"} if task else set()
    for fraction in sorted(set(by_fraction) | with_last):  # chapter 2's losses, and chapter 4's QA pairs
        strategies, pieces = by_fraction.get(fraction, {}), []
        if "similarity" in strategies and len(strategies) > 1:
            own, own_blocks = strategies["similarity"][0]
            texts = []
            for strategy, draws in strategies.items():
                if strategy == "similarity":
                    continue
                gap = draws_gap([own_blocks], [blocks for _, blocks in draws])
                mean = float(np.mean([loss for loss, _ in draws]))
                label = strategy if len(draws) == 1 else (
                    f"{strategy} (mean of {len(draws)} distinct blocks, lowest "
                    f"{min(loss for loss, _ in draws) - own:+.2f})"
                )  # fmt: skip
                if gap is None:
                    texts.append(f"{label} {mean - own:+.2f} (no per-block losses: unresolved)")
                    beats.append(False)
                    continue
                texts.append(f"{label} {gap.difference:+.2f} [{gap.low:+.2f}, {gap.high:+.2f}]")
                resolved = gap.outcome == DIFFERENT
                beats.append(resolved and gap.difference > margin)
                loses.append(resolved and gap.difference < -margin)
            pieces.append(
                "loss minus the similarity block's, before healing (nats, 95% interval over the held-out blocks): "
                + ", ".join(texts)
            )
        sweep_at = rows[[abs(removed(r) - fraction) < 1e-6 for _, r in rows.iterrows()]] if not rows.empty else rows
        if task and not sweep_at.empty:
            point = sweep_at.iloc[0]
            before = find_comparison(comparisons, task, point["fraction"], "last", "pruned", "similarity")
            if before is not None:
                pieces.append(
                    f"{task}, last - similarity {before['difference']:+.3f} [{before['low']:+.3f}, "
                    f"{before['high']:+.3f}] {before['outcome']}"
                )
                loses.append(before["outcome"] == DIFFERENT and before["difference"] > 0)
            healed = find_comparison(comparisons, task, point["fraction"], "last", "healed", "similarity")
            if healed is not None:
                meeting = (
                    f"healed {task}, last - similarity {healed['difference']:+.3f} [{healed['low']:+.3f}, "
                    f"{healed['high']:+.3f}] {healed['outcome']}"
                )
                pair = _healed(sweep_at)
                if not pair.empty and all(is_at_chance(r, task) for _, r in pair.iterrows()):
                    meeting += " (both healed models at chance: meeting there says nothing)"
                else:
                    meets.append(healed["outcome"])
                    ps.append(float(healed["p equivalence"]))
                    powers.append(float(healed["detectable"]))
                pieces.append(meeting)
        if pieces:
            parts.append(f"{fraction:.0%}: " + "; ".join(pieces))
    evidence = "; ".join(parts)
    p, power = max(ps, default=None), max(powers, default=None)
    if any(loses) or DIFFERENT in meets:
        return _Judged(NOT_HELD, evidence, _figure(rows), p=p, power=power)
    reasons = []
    if not all(beats):
        reasons.append(f"some loss gaps are not resolved beyond the +-{margin:.2f} nats margin")
    if not meets:
        why = "not healed here" if _healed(rows).empty else "no healed pair above chance on QA"
        reasons.append(f"'they meet' is untested ({why})")
    elif not all(m == EQUIVALENT for m in meets):
        reasons.append("a healed pair is neither shown equivalent nor different")
    if reasons:
        return _Judged(INCONCLUSIVE, evidence + "; " + "; ".join(reasons), _figure(rows), p=p, power=power)
    return _Judged(HELD, evidence, _figure(rows), p=p, power=power)


def _size_ladder(tables: _Tables) -> _Judged:
    """Judged on the size ladder (chapter 5), on one task for every model: the first of ARC-Easy and MMLU on which
    every model is resolved above chance unpruned."""
    ladder, comparisons = tables.get(files.LADDER), tables.get(files.LADDER_COMPARISONS)
    models = list(dict.fromkeys(ladder["model"])) if "model" in ladder else []
    if len(models) < 2:
        return _Judged(UNTESTABLE, "fewer than two models on the size ladder", "")
    task = next(
        (t for t in ("arc_easy", "mmlu") if t in ladder and all(_above_chance(_of(ladder, m), t) for m in models)), None
    )
    if task is None:
        below = [m for m in models if not ("arc_easy" in ladder and _above_chance(_of(ladder, m), "arc_easy"))]
        return _Judged(
            UNTESTABLE, "no task on which every model of the ladder is resolved above chance unpruned (on ARC-Easy "
            f"not: {', '.join(below)})", _figure(ladder),
        )  # fmt: skip
    points = []
    for model in models:
        rows = _of(ladder, model)
        reading = read_curve(rows, _of(comparisons, model), task)
        points.append((int(_unpruned(rows)["parameters"]), model, reading))
    points.sort(key=lambda point: point[0])
    evidence = f"{task}: " + "; ".join(
        f"{model} ({size / 1e6:.0f}M) "
        + ("no collapse in the grid" if r.collapse is None else f"at chance from {fraction_label(r.collapse.row)} on")
        + (f" (grid up to {removed(r.points[-1].row):.0%})" if r.points else "")
        for size, model, r in points
    )
    # A collapse the grid does not reach lies beyond the grid's last fraction: still later than any collapse at or
    # before that fraction, so a pair of models can be ordered when only the later one's collapse is out of reach.
    spans = [collapse_span(r) for *_, r in points]
    pairs = list(itertools.combinations(range(len(points)), 2))  # (smaller, larger) model
    earlier = [
        f"{points[j][1]} ({points[j][0] / 1e6:.0f}M) collapses before {points[i][1]} ({points[i][0] / 1e6:.0f}M)"
        for i, j in pairs
        if surely_before(spans[j], spans[i])
    ]
    if earlier:
        return _Judged(NOT_HELD, evidence + "; a larger model collapses first: " + ", ".join(earlier), _figure(ladder))
    ordered = all(spans[j][0] >= spans[i][1] - 1e-9 for i, j in pairs)  # none can come before a smaller one's
    if ordered and spans[-1][0] > spans[0][1] + 1e-9:
        return _Judged(HELD, evidence, _figure(ladder))
    missing = [model for _, model, r in points if r.collapse is None]
    if missing:
        return _Judged(
            UNTESTABLE, evidence + f"; the grid does not reach the collapse of {', '.join(missing)}", _figure(ladder)
        )
    return _Judged(INCONCLUSIVE, evidence, _figure(ladder))  # every collapse found, at the same fraction


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
