"""The claims ledger, judged on small result files written here: each criterion can come out held, did not hold
and inconclusive."""

import re

import numpy as np
import pandas as pd
import pytest

from layerprune.book import ledger as book_ledger
from layerprune.book import prose
from layerprune.study import claims, files, statistics
from layerprune.study.sweeps import with_holm

MODEL = "m"
QUESTIONS = 400
SAME = (3, 2)  # discordant pairs (unpruned only, pruned only) of a point equivalent to the unpruned model
UNCLEAR = (30, 20)  # -2.5 points on 400 questions: neither resolved nor within the margin


def _blocks(starts: list[int], layers: int = 10) -> pd.DataFrame:
    rows = [
        {"model": MODEL, "layers": layers, "n": n, "fraction": n / layers, "start": start, "same start": 0.9}
        for n, start in enumerate(starts, start=1)
    ]
    return pd.DataFrame(rows)


def _sweep(accuracy: dict[float, float], healed: dict[float, float] | None = None) -> pd.DataFrame:
    """MMLU accuracy of the similarity block by fraction of 10 layers (0: unpruned), 400 questions, loss rising."""
    rows = []
    for fraction, value in accuracy.items():
        strategy = "none" if fraction == 0 else "similarity"
        rows.append(_row(fraction, strategy, "pruned", value, 3.0 + 4 * fraction))
        if fraction:
            rows.append(_row(fraction, "last", "pruned", value - 0.01, 3.5 + 8 * fraction))
    for fraction, value in (healed or {}).items():
        rows.append(_row(fraction, "similarity", "healed", value, 3.1 + fraction))
        rows.append(_row(fraction, "last", "healed", value, 3.12 + fraction))
    return pd.DataFrame(rows)


def _row(fraction: float, strategy: str, stage: str, accuracy: float, loss: float) -> dict:
    return {
        "model": MODEL, "fraction": fraction, "n": round(fraction * 10), "model layers": 10,
        "fraction removed": round(fraction * 10) / 10, "strategy": strategy, "stage": stage, "parameters": 10**9,
        "loss": loss, "mmlu": accuracy, "mmlu n": QUESTIONS, "mmlu chance": 0.25,
    }  # fmt: skip


def _comparisons(
    sweep: pd.DataFrame, counts: dict[float, tuple[int, int]] | None = None, extra: list[dict] | None = None
) -> pd.DataFrame:
    """Every row against the unpruned model from discordant counts (`counts` by fraction, else `SAME`), plus
    `extra` comparisons, Holm-corrected and decided as the sweep does (`sweeps.with_holm`)."""
    rows = [
        _paired(row.fraction, row.strategy, row.stage, "unpruned", (counts or {}).get(row.fraction, SAME))
        for row in sweep.itertuples()
        if row.strategy != "none"
    ]
    return pd.DataFrame(with_holm(rows + list(extra or [])))


def _paired(fraction: float, strategy: str, stage: str, versus: str, counts: tuple[int, int]) -> dict:
    paired = statistics.counts_comparison(QUESTIONS, *counts)
    return {
        "model": MODEL, "task": "mmlu", "fraction": fraction, "strategy": strategy, "stage": stage, "versus": versus,
        "questions": QUESTIONS, "difference": paired.difference, "low": paired.low, "high": paired.high,
        "a only": paired.a_only, "b only": paired.b_only, "p": paired.p_value, "low 90": paired.low90,
        "high 90": paired.high90, "margin": paired.margin, "p equivalence": paired.p_equivalence,
        "detectable": paired.detectable,
    }  # fmt: skip


def _write(tmp_path, **tables: pd.DataFrame):
    for name, table in tables.items():
        table.to_csv(tmp_path / f"{name}.csv", index=False)
    return {(v.claim, v.model): v for v in claims.ledger(tmp_path)}


def test_every_criterion_is_written_down_with_its_margin():
    table = claims.criteria_table()
    assert list(table["claim"]) == list(claims.CLAIMS)
    assert all(table["criterion"].str.len() > 40) and all(table["reason"].str.len() > 40)
    assert "0.05" in claims.CRITERIA["c"].margin and "TOST" not in claims.CRITERIA["c"].test
    for claim in "acdef":
        assert "did not hold" in claims.CRITERIA[claim].criterion.lower()


def test_deep_blocks_start_in_the_deeper_half(tmp_path):
    deep = _write(tmp_path, **{"01_blocks": _blocks([8, 7, 6, 5, 5, 3, 2, 1, 0])})[("a", MODEL)]
    assert deep.verdict == claims.HELD and "8..8, 7..8, 6..8, 5..8, 5..9" in deep.evidence
    middle = _write(tmp_path, **{"01_blocks": _blocks([8, 7, 6, 4, 4, 3, 2, 1, 0])})[("a", MODEL)]
    assert middle.verdict == claims.INCONCLUSIVE and "3 of 5 start at or past layer 5" in middle.evidence
    centred = _write(tmp_path, **{"01_blocks": _blocks([4, 4, 3, 3, 2, 1, 1, 1, 0])})[("a", MODEL)]
    assert centred.verdict == claims.NOT_HELD  # blocks around the middle are not blocks of the deeper half
    assert centred.figure == "01_similarity.html"


def test_final_layer_distinct_only_when_resolved(tmp_path):
    """Compared with the other layers of the deeper half (here 3 and 4), not with the first layer's large change."""
    layers = pd.DataFrame(
        {"model": MODEL, "layer": range(6), "D": [0.9, 0.1, 0.1, 0.2, 0.1, 0.5],
         "D low": [0.85, 0.09, 0.09, 0.18, 0.09, 0.45], "D high": [0.95, 0.11, 0.11, 0.22, 0.11, 0.55]}
    )  # fmt: skip
    held = _write(tmp_path, **{"01_single_layers": layers})[("b", MODEL)]
    assert held.verdict == claims.HELD and "deeper half: layer 3, 0.200" in held.evidence
    text = prose.final_layer(layers[layers["model"] == MODEL])
    assert "larger than the largest change of the other layers of the deeper half (layer 3: 0.200" in text
    assert "difference is resolved" in text and "layer 0's (0.900)" in text
    layers.loc[5, "D low"] = 0.19
    assert _write(tmp_path, **{"01_single_layers": layers})[("b", MODEL)].verdict == claims.INCONCLUSIVE
    layers.loc[5, "D"] = 0.15
    assert _write(tmp_path, **{"01_single_layers": layers})[("b", MODEL)].verdict == claims.NOT_HELD


def test_plateau_then_collapse_held_did_not_hold_and_inconclusive(tmp_path):
    sweep = _sweep({0.0: 0.55, 0.1: 0.54, 0.2: 0.53, 0.3: 0.26, 0.4: 0.25})
    falls = {0.3: (120, 4), 0.4: (124, 4)}
    held = _write(tmp_path, **{"04_results": sweep, "04_comparisons": _comparisons(sweep, falls)})[("c", MODEL)]
    assert held.verdict == claims.HELD, held.evidence
    assert "holds (equivalent) up to 2/10 (20%)" in held.evidence and "at chance from 3/10 (30%) on" in held.evidence
    assert float(held.p) < 0.05 and float(held.power) < statistics.MARGINS["accuracy"].value
    assert claims.collapse_point(sweep, _comparisons(sweep, falls), "mmlu") == (0.2, 0.3)

    early = _comparisons(sweep, falls | {0.1: (80, 5)})  # the first fraction removed already drops
    dropped = _write(tmp_path, **{"04_comparisons": early})[("c", MODEL)]
    assert dropped.verdict == claims.NOT_HELD and "no plateau: 1/10 (10%)" in dropped.evidence

    slight = _comparisons(sweep, falls | {0.1: (20, 4)})  # -4 points, resolved, not shown beyond the 5-point margin
    first = slight[(slight["fraction"] == 0.1) & (slight["strategy"] == "similarity")]
    assert first["outcome"].item() == statistics.DIFFERENT and first["high 90"].item() > -0.05
    within = _write(tmp_path, **{"04_comparisons": slight})[("c", MODEL)]
    assert within.verdict == claims.INCONCLUSIVE and "a loss beyond the margin (0.05) is not shown" in within.evidence

    unclear = _write(tmp_path, **{"04_comparisons": _comparisons(sweep, falls | {0.1: UNCLEAR, 0.2: UNCLEAR})})
    verdict = unclear[("c", MODEL)]  # no resolved difference, but not equivalent either: underpowered
    assert verdict.verdict == claims.INCONCLUSIVE and "neither shown equivalent" in verdict.evidence
    assert float(verdict.power) > 0.025  # the -2.5 points seen are below what 400 questions detect

    near = _sweep({0.0: 0.55, 0.1: 0.54, 0.2: 0.53, 0.3: 0.28, 0.4: 0.28})  # near chance, not shown at it
    found = _write(tmp_path, **{"04_results": near, "04_comparisons": _comparisons(near, falls)})
    assert found[("c", MODEL)].verdict == claims.INCONCLUSIVE
    assert "no fraction of the grid is at chance" in found[("c", MODEL)].evidence


def test_points_compared_on_fewer_questions_than_the_unpruned_model_say_on_how_many(tmp_path):
    """The unpruned model and the first point answer 600 questions, the others 400 of them: each difference is
    on the questions both answered, and the evidence says so where that is not the unpruned model's count."""
    sweep = _sweep({0.0: 0.55, 0.1: 0.54, 0.2: 0.53, 0.3: 0.26, 0.4: 0.25})
    sweep.loc[sweep["fraction"].isin([0.0, 0.1]), "mmlu n"] = 600
    comparisons = _comparisons(sweep, {0.3: (120, 4), 0.4: (124, 4)})
    comparisons.loc[comparisons["fraction"] == 0.1, "questions"] = 600
    found = _write(tmp_path, **{"04_results": sweep, "04_comparisons": comparisons})[("c", MODEL)]
    assert "0.550 unpruned (600 questions, chance 0.25)" in found.evidence
    points = dict(re.findall(r"(\d+/10) \(\d+%\) ([^;]*)", found.evidence.split("; holds")[0]))
    assert "questions" not in points["1/10"] and points["2/10"].endswith("equivalent on 400 questions")
    assert points["3/10"].endswith("different on 400 questions, at chance")


def test_a_curve_that_rises_above_chance_after_reaching_it_is_non_monotone(tmp_path):
    dip = _sweep({0.0: 0.55, 0.1: 0.54, 0.2: 0.26, 0.3: 0.40, 0.4: 0.25})
    falls = {0.2: (120, 4), 0.3: (70, 10), 0.4: (124, 4)}
    found = _write(tmp_path, **{"04_results": dip, "04_comparisons": _comparisons(dip, falls)})
    verdict = found[("c", MODEL)]
    assert verdict.verdict == claims.INCONCLUSIVE
    assert "non-monotone: at chance at 2/10 (20%), resolved above chance again at 3/10 (30%)" in verdict.evidence
    text = prose.headline(dip[dip["strategy"] != "last"], _comparisons(dip, falls), "mmlu", ["similarity"])
    assert "above chance again at 3/10 (30%) (0.400 [0.353, 0.449]) (a non-monotone curve)" in text


def test_a_model_at_chance_cannot_test_qa_claims(tmp_path):
    sweep = _sweep({0.0: 0.26, 0.2: 0.25})
    found = _write(tmp_path, **{"04_results": sweep, "04_comparisons": _comparisons(sweep)})
    assert found[("c", MODEL)].verdict == claims.UNTESTABLE
    assert found[("f", "all")].verdict == claims.UNTESTABLE


def _ladder(large: dict[float, float]) -> tuple[pd.DataFrame, pd.DataFrame]:
    small = _sweep({0.0: 0.5, 0.1: 0.26, 0.2: 0.25}).assign(model="small", parameters=10**8)
    big = _sweep(large).assign(model="large", parameters=10**9)
    ladder = pd.concat([small, big], ignore_index=True)
    comparisons = pd.concat(
        [
            _comparisons(small, {0.1: (100, 4), 0.2: (100, 3)}).assign(model="small"),
            _comparisons(big, {0.2: (140, 2)}).assign(model="large"),
        ]
    )
    return ladder, comparisons


def test_larger_models_hold_longer_on_the_ladder(tmp_path):
    ladder, comparisons = _ladder({0.0: 0.6, 0.1: 0.59, 0.2: 0.26})
    found = _write(tmp_path, **{"05_across_models": ladder, "05_comparisons": comparisons})
    assert found[("f", "all")].verdict == claims.HELD
    assert "small (100M) at chance from 1/10 (10%) on" in found[("f", "all")].evidence
    swapped = ladder.assign(parameters=ladder["parameters"].iloc[::-1].to_numpy())
    assert _write(tmp_path, **{"05_across_models": swapped})[("f", "all")].verdict == claims.NOT_HELD
    ladder, comparisons = _ladder({0.0: 0.6, 0.1: 0.59, 0.2: 0.50})  # the grid never reaches its collapse
    found = _write(tmp_path, **{"05_across_models": ladder, "05_comparisons": comparisons})
    assert found[("f", "all")].verdict == claims.HELD  # later than 2/10, so later than the small model's 1/10
    assert "large (1000M) no collapse in the grid (grid up to 20%)" in found[("f", "all")].evidence
    reversed_sizes = ladder.assign(parameters=ladder["model"].map({"small": 10**10, "large": 10**8}))
    found = _write(tmp_path, **{"05_across_models": reversed_sizes})[("f", "all")]
    assert found.verdict == claims.NOT_HELD  # the larger collapses at 1/10, the smaller is above chance at 2/10
    assert "a larger model collapses first: small (10000M) collapses before large (100M)" in found.evidence


def test_a_collapse_beyond_the_grid_of_the_smaller_model_leaves_the_order_open(tmp_path):
    ladder, comparisons = _ladder({0.0: 0.6, 0.1: 0.59, 0.2: 0.25})
    small = ladder["model"] == "small"
    ladder = ladder[~(small & (ladder["fraction"] == 0.2))].copy()  # the small model's grid ends at 1/10,
    ladder.loc[small & (ladder["fraction"] == 0.1), "mmlu"] = 0.45  # above chance: its collapse comes later
    found = _write(tmp_path, **{"05_across_models": ladder, "05_comparisons": comparisons})[("f", "all")]
    assert found.verdict == claims.UNTESTABLE  # the larger collapses at 2/10; the smaller's could come before
    assert "the grid does not reach the collapse of small" in found.evidence
    dip = ladder.copy()
    large = (dip["model"] == "large") & (dip["strategy"] == "similarity")
    dip.loc[large & (dip["fraction"] == 0.1), "mmlu"] = 0.25  # at chance,
    dip.loc[large & (dip["fraction"] == 0.2), "mmlu"] = 0.45  # then above chance again
    text = prose.ladder(dip, comparisons, "mmlu")
    assert "at chance at 1/10 (10%), above chance again at 2/10 (20%) (0.450 [" in text and "non-monotone" in text


def _losses(gaps: dict[str, float], fractions=(0.2, 0.4), noise: float = 0.01) -> pd.DataFrame:
    """Chapter 2's losses: the similarity block at 4.0 nats, each other strategy `gaps[strategy]` above it (random:
    three distinct blocks around it); 8 held-out blocks each, which vary together and apart by +-`noise`."""
    shared = np.linspace(-0.5, 0.5, 8)  # what makes a block easy or hard for every model alike
    apart = np.array([1, -1, 1, -1, -1, 1, -1, 1]) * noise  # mean 0: each strategy's own block-to-block scatter

    def row(base: dict, strategy: str, seed: int, loss: float, own: np.ndarray) -> dict:
        blocks = files.block_losses_cell(loss + shared + own)
        return base | {"strategy": strategy, "seed": seed, "layers": f"[{seed}]", "loss": loss, "block losses": blocks}

    rows = []
    for fraction in fractions:
        base = {"model": MODEL, "fraction": fraction, "n": round(fraction * 10), "fraction removed": fraction}
        rows.append(row(base, "similarity", 0, 4.0, 0 * apart))
        for strategy, gap in gaps.items():
            draws = [-0.02, 0.0, 0.02] if strategy == "random" else [0.0]
            for seed, jitter in enumerate(draws):
                rows.append(row(base, strategy, seed, 4 + gap + jitter, apart))
    return pd.DataFrame(rows)


def test_strategies_held_did_not_hold_and_inconclusive(tmp_path):
    sweep = _sweep({0.0: 0.55, 0.2: 0.50, 0.4: 0.45}, healed={0.2: 0.52, 0.4: 0.50})
    healed_pair = [_paired(f, "last", "healed", "similarity", (4, 4)) for f in (0.2, 0.4)]
    before = [_paired(f, "last", "pruned", "similarity", (10, 6)) for f in (0.2, 0.4)]
    comparisons = _comparisons(sweep, {0.2: (30, 8), 0.4: (50, 10)}, healed_pair + before)
    every = {"last": 0.3, "random": 0.2, "block_influence": 0.1}
    found = _write(
        tmp_path, **{"02_pruned_losses": _losses(every), "04_results": sweep, "04_comparisons": comparisons}
    )[("e", MODEL)]
    assert found.verdict == claims.HELD, found.evidence
    assert "20%: loss minus the similarity block's, before healing (nats, 95% interval over the held-out blocks): " \
           "last +0.30 [+0.29, +0.31], random (mean of 3 distinct blocks, lowest +0.18) +0.20 [+0.19, +0.21], " \
           "block_influence +0.10 [+0.09, +0.11]" in found.evidence  # fmt: skip
    assert "healed mmlu, last - similarity +0.000" in found.evidence and "equivalent" in found.evidence

    influence_wins = _write(tmp_path, **{"02_pruned_losses": _losses(every | {"block_influence": -0.1})})
    assert influence_wins[("e", MODEL)].verdict == claims.NOT_HELD
    random_wins = _write(tmp_path, **{"02_pruned_losses": _losses(every | {"random": -0.08})})
    assert random_wins[("e", MODEL)].verdict == claims.NOT_HELD

    tie = _write(tmp_path, **{"02_pruned_losses": _losses(every | {"block_influence": 0.02})})[("e", MODEL)]
    assert tie.verdict == claims.INCONCLUSIVE and "not resolved beyond the +-0.05 nats margin" in tie.evidence
    noisy = _write(tmp_path, **{"02_pruned_losses": _losses(every, noise=0.5)})[("e", MODEL)]
    assert noisy.verdict == claims.INCONCLUSIVE  # the same mean gaps, but the blocks do not resolve them
    assert "block_influence +0.10 [-0.35, +0.55]" in noisy.evidence  # 0.10 +- t(7) 2.365 x 0.5345 / sqrt(8)

    unclear = [_paired(f, "last", "healed", "similarity", UNCLEAR) for f in (0.2, 0.4)]
    comparisons = _comparisons(sweep, {0.2: (30, 8), 0.4: (50, 10)}, unclear + before)
    found = _write(tmp_path, **{"02_pruned_losses": _losses(every), "04_comparisons": comparisons})[("e", MODEL)]
    assert found.verdict == claims.INCONCLUSIVE and "neither shown equivalent nor different" in found.evidence

    apart = [_paired(f, "last", "healed", "similarity", (60, 10)) for f in (0.2, 0.4)]
    comparisons = _comparisons(sweep, {0.2: (30, 8), 0.4: (50, 10)}, apart + before)
    assert _write(tmp_path, **{"04_comparisons": comparisons})[("e", MODEL)].verdict == claims.NOT_HELD

    elsewhere = _losses(every, fractions=(0.1, 0.3))  # chapter 2 at other fractions than the sweep's healed pairs
    found = _write(tmp_path, **{"02_pruned_losses": elsewhere})[("e", MODEL)]
    assert found.verdict == claims.NOT_HELD and "20%: mmlu, last - similarity" in found.evidence
    assert "30%: loss minus the similarity block's" in found.evidence and "healed mmlu, last - similarity -0.125" in (
        found.evidence
    )

    unhealed = _sweep({0.0: 0.55, 0.2: 0.50, 0.4: 0.45})  # the loss half can hold; "they meet" was never tested
    comparisons = _comparisons(unhealed, {0.2: (30, 8), 0.4: (50, 10)}, before)
    unhealed_files = {"02_pruned_losses": _losses(every), "04_results": unhealed, "04_comparisons": comparisons}
    found = _write(tmp_path, **unhealed_files)[("e", MODEL)]
    assert found.verdict == claims.INCONCLUSIVE
    assert found.evidence.endswith("; 'they meet' is untested (not healed here)")


def _controls(
    other: tuple[float, float, float, float], healing=(3.0, 3.8, 3.3, 2.95), n: int = 2, spread: float = 0.02
) -> pd.DataFrame:
    """Chapter 3's healing controls of the similarity block of `n` layers: the held-out losses (unpruned, pruned,
    pruned + healed, unpruned + healed) on the healing corpus's text and on text of another domain, the net gain's
    interval +-`spread` around it."""
    rows = []
    for corpus, domain, losses in (("sotu", "healing", healing), ("sciq", "other", other)):
        names = ("unpruned", "pruned", "pruned + healed", "unpruned + healed")
        net = (losses[1] - losses[2]) - (losses[0] - losses[3])
        rows.append({"model": MODEL, "strategy": "similarity", "n": n, "model layers": 10, "corpus": corpus,
                     "domain": domain, **dict(zip(names, losses, strict=True)), "net gain low": net - spread,
                     "net gain high": net + spread})  # fmt: skip
    return pd.DataFrame(rows)


def test_healing_gain_is_judged_against_its_controls(tmp_path):
    """Claim (d) at the controlled point (2 of 10 layers; 4 of 10 has no controls): the loss recovered on text of
    another domain, net of what the unpruned model healed alike gains, against the share of MMLU recovered."""
    sweep = _sweep({0.0: 0.55, 0.2: 0.30, 0.4: 0.25}, healed={0.2: 0.33, 0.4: 0.26})
    gains = [_paired(0.2, "similarity", "healed", "pruned", (2, 14))]  # +3 points [+1, +5]: 4-20% of the 25 lost
    gains.append(_paired(0.4, "similarity", "healed", "pruned", (0, 40)))  # no controls: the verdict does not read it
    comparisons = _comparisons(sweep, {0.2: (100, 0), 0.4: (120, 0)}, gains)
    tables = {"04_results": sweep, "04_comparisons": comparisons}
    held = _write(tmp_path, **tables, **{"03_controls": _controls((4.0, 4.6, 4.3, 4.0))})[("d", MODEL)]
    assert held.verdict == claims.HELD, held.evidence  # 50% of the other domain's gap back, MMLU 12%
    controlled = comparisons[(comparisons["versus"] == "pruned") & (comparisons["fraction"] == 0.2)].iloc[0]
    assert held.p == f"{controlled['p holm']:.3f}" and held.power == f"{controlled['detectable']:.3f}"
    assert (
        "sciq (other domain) loss 50% recovered net of the control (+0.30 [+0.28, +0.32] nats of 0.60" in held.evidence
    )
    assert "sotu (healing domain) loss 56% recovered" in held.evidence and "mmlu 12%" in held.evidence
    assert "4/10 (40%): loss" in held.evidence and "(no control)" in held.evidence

    only_domain = _write(tmp_path, **{"03_controls": _controls((4.0, 4.6, 4.58, 4.0))})[("d", MODEL)]
    assert only_domain.verdict == claims.NOT_HELD and "healing only fit its domain" in only_domain.evidence
    control_gains = _write(tmp_path, **{"03_controls": _controls((4.0, 4.6, 4.3, 3.7))})[("d", MODEL)]
    assert control_gains.verdict == claims.NOT_HELD  # the unpruned model healed alike gains as much: no repair
    unresolved = _write(tmp_path, **{"03_controls": _controls((4.0, 4.6, 4.3, 4.0), spread=0.4)})[("d", MODEL)]
    assert unresolved.verdict == claims.INCONCLUSIVE and "not resolved beyond" in unresolved.evidence
    between = _write(tmp_path, **{"03_controls": _controls((4.0, 4.6, 4.3, 3.75))})[("d", MODEL)]
    assert between.verdict == claims.INCONCLUSIVE  # net +0.05, its interval reaching past the margin: not ruled out

    qa_back = _sweep({0.0: 0.55, 0.2: 0.30, 0.4: 0.25}, healed={0.2: 0.55, 0.4: 0.55})
    back = _comparisons(
        qa_back, {0.2: (100, 0), 0.4: (120, 0)}, [_paired(0.2, "similarity", "healed", "pruned", (0, 100))]
    )
    found = _write(
        tmp_path, **{"04_results": qa_back, "04_comparisons": back, "03_controls": _controls((4.0, 4.6, 4.3, 4.0))}
    )
    assert found[("d", MODEL)].verdict == claims.NOT_HELD
    assert "the accuracy recovers as large a share" in found[("d", MODEL)].evidence

    alike = _sweep({0.0: 0.55, 0.2: 0.30, 0.4: 0.25}, healed={0.2: 0.425, 0.4: 0.26})  # half of the accuracy back
    close = _comparisons(
        alike, {0.2: (100, 0), 0.4: (120, 0)}, [_paired(0.2, "similarity", "healed", "pruned", (10, 60))]
    )
    found = _write(tmp_path, **{"04_results": alike, "04_comparisons": close})[("d", MODEL)]
    assert found.verdict == claims.INCONCLUSIVE  # the loss's 50% and the accuracy's 50% +- 14: not resolved apart
    assert "the two shares are not resolved apart" in found.evidence

    _write(tmp_path, **tables)
    cheap = _write(tmp_path, **{"03_controls": _controls((4.0, 4.03, 4.0, 4.0))})[("d", MODEL)]
    assert cheap.verdict == claims.INCONCLUSIVE and "within the margin" in cheap.evidence
    neither = _write(tmp_path, **{"03_controls": _controls((4.0, 4.6, 4.58, 4.0), (3.0, 3.8, 3.78, 3.0))})
    assert neither[("d", MODEL)].verdict == claims.INCONCLUSIVE
    assert "the other domain's net recovery is not resolved" in neither[("d", MODEL)].evidence

    (tmp_path / "03_controls.csv").unlink()
    uncontrolled = _write(tmp_path)[("d", MODEL)]
    assert uncontrolled.verdict == claims.UNTESTABLE and "no healed point has controls" in uncontrolled.evidence
    assert uncontrolled.p == "" and uncontrolled.power == ""  # nothing was tested
    assert "no control on other text" not in claims.CRITERIA["d"].reason and "0.05" in claims.CRITERIA["d"].margin


def test_prose_of_the_controls_and_of_the_headline_healing():
    text = prose.controls(_controls((4.0, 4.6, 4.3, 4.0)).assign(strategy="similarity"))
    assert text.startswith("Removing 2 of 10 layers (similarity): on sotu (held-out text of the healing corpus)")
    assert "on sciq (text healing never saw) pruning costs 0.60 nats; healing the pruned model wins back 0.30" in text
    assert "the unpruned model healed alike gains +0.05, so healing repairs +0.45 nats net (95% interval over the " \
           "held-out blocks +0.43 to +0.47), 56%" in text  # fmt: skip
    sweep = _sweep({0.0: 0.55, 0.1: 0.54, 0.2: 0.26, 0.3: 0.25})
    falls = _comparisons(sweep, {0.2: (120, 4), 0.3: (124, 4)})
    late = prose.headline_healing(sweep, falls, "mmlu", [3])  # the paper profile heals at n = 4, 8, 12
    assert "at chance from 2/10 (20%) on, so every healed point lies at or past the collapse" in late
    assert "The paper profile heals it at n = 4, 8, 12; this build leaves those healings out" in late
    early = prose.headline_healing(sweep, falls, "mmlu", [1, 3])
    assert "n = 1 lies before the collapse" in early and "leaves those healings out" not in early
    none = prose.headline_healing(sweep, falls, "mmlu", [])
    assert none.startswith(f"{MODEL} is not healed in this build; with the similarity block its mmlu accuracy is at")
    assert "on. The paper profile heals it at n = 4, 8, 12; this build leaves those healings out" in none


@pytest.mark.parametrize("flip", [False, True])
def test_the_ledger_check_sees_a_changed_result(tmp_path, flip):
    sweep = _sweep({0.0: 0.55, 0.1: 0.54, 0.2: 0.26})
    _write(tmp_path, **{"04_results": sweep, "04_comparisons": _comparisons(sweep, {0.2: (120, 4)})})
    claims.ledger_table(tmp_path).to_csv(tmp_path / "07_claims.csv", index=False)
    if flip:
        _write(tmp_path, **{"04_comparisons": _comparisons(sweep, {0.1: (80, 5), 0.2: (120, 4)})})
    assert bool(claims.check_ledger(tmp_path, tmp_path / "07_claims.csv")) == flip


def test_the_ledger_shows_margin_test_p_and_power(tmp_path):
    sweep = _sweep({0.0: 0.55, 0.1: 0.54, 0.2: 0.26})
    _write(tmp_path, **{"04_results": sweep, "04_comparisons": _comparisons(sweep, {0.2: (120, 4)})})
    table = claims.ledger_table(tmp_path)
    assert {"margin", "test", "p", "power"} <= set(table.columns)
    row = table[table["claim"] == "c"].iloc[0]
    assert row["verdict"] == claims.HELD and row["margin"] == claims.CRITERIA["c"].margin and row["p"]
    assert "*held* (p = " in book_ledger.evidence(table)
    assert set(table["verdict"]) <= set(claims.VERDICTS)


def test_prose_states_what_the_tables_hold():
    blocks = _blocks([1, 1, 1, 7, 6, 5, 4, 3, 0]).assign(**{"runner-up start": 2})
    text = prose.depth(blocks)
    assert "$\\ell^*(n)$ = 1, 1, 1, 7, 6" in text and "2 of 5 start in the deeper half (at or past layer 5)" in text
    sweep = _sweep({0.0: 0.55, 0.1: 0.54, 0.2: 0.30}, healed={0.2: 0.33})
    comparisons = _comparisons(sweep, {0.2: (100, 0)})
    headline = prose.headline(sweep[sweep["stage"] == "pruned"], comparisons, "mmlu", ["similarity"])
    assert "scores 0.550 [" in headline and "equivalent to the unpruned model's (within the margin) up to 1/10" in (
        headline
    )
    assert "first resolved drop is at 2/10 (20%)" in headline and "no fraction tried is shown at chance" in headline
    both = prose.headline(
        sweep,
        _comparisons(
            sweep, {0.2: (100, 0)}, [_paired(f, "last", "pruned", "similarity", (40, 10)) for f in (0.1, 0.2)]
        ),
        "mmlu",
        ["similarity", "last"],
    )
    assert "On the same questions, last minus the similarity block, at the same number of layers removed: 1 layers " \
           "-0.075 [" in both and "different (p = " in both  # fmt: skip
    healed = prose.healing(sweep, comparisons, "mmlu")
    assert "similarity, 2/10 (20%): loss 3.80 -> 3.30 nats healed (unpruned 3.00); mmlu 0.300 -> 0.330" in healed
    assert prose.healing(sweep[sweep["stage"] == "pruned"], comparisons, "mmlu") == ""
    gained = _comparisons(sweep, extra=[_paired(0.2, "similarity", "healed", "pruned", (2, 14))])
    text = prose.healing(sweep, gained, "mmlu")  # the outcome is decided on the Holm p, which the reader sees
    assert "paired difference +0.030 [" in text and "different (p = " in text and ", Holm " in text
    losses = pd.DataFrame(
        {"fraction": [0.2] * 4, "n": [2] * 4, "fraction removed": [0.2] * 4,
         "strategy": ["similarity", "last", "random", "random"], "loss": [4, 6, 5, 7]}
    )  # fmt: skip
    assert prose.selection(losses, 3.0) == (
        "Unpruned: 3.00 nats. 20% removed: similarity lowest (4.00 nats), last next at 6.00, random 6.00 ± 1.41 over "
        "2 distinct blocks."
    )  # no per-block losses: no interval
    paired = prose.selection(_losses({"last": 0.3, "block_influence": 0.1}, fractions=(0.2,)), 3.0)
    assert paired == "Unpruned: 3.00 nats. 20% removed: similarity lowest (4.00 nats), block_influence next at 4.10 " \
                     "(+0.10 [+0.09, +0.11] over the held-out blocks)."  # fmt: skip
    close = prose.selection(_losses({"last": 0.3, "block_influence": 0.1}, fractions=(0.2,), noise=0.5), 3.0)
    assert "block_influence next at 4.10 (+0.10 [-0.35, +0.55] over the held-out blocks, not resolved)" in close
