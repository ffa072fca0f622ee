"""The claims ledger, judged on small result files written here."""

import pandas as pd
import pytest

from layerprune.book import prose
from layerprune.study import claims

MODEL = "m"


def _blocks(starts: list[int], layers: int = 10) -> pd.DataFrame:
    rows = [
        {"model": MODEL, "layers": layers, "n": n, "fraction": n / layers, "start": start, "same start": 0.9}
        for n, start in enumerate(starts, start=1)
    ]
    return pd.DataFrame(rows)


def _sweep(accuracy: dict[float, float], healed: dict[float, float] | None = None) -> pd.DataFrame:
    """MMLU accuracy of the similarity block by fraction (0: unpruned), 400 questions, loss rising with it."""
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
        "model": MODEL, "fraction": fraction, "strategy": strategy, "stage": stage, "parameters": 10**9, "loss": loss,
        "mmlu": accuracy, "mmlu n": 400, "mmlu chance": 0.25,
    }  # fmt: skip


def _comparisons(sweep: pd.DataFrame, resolved_below: set[float]) -> pd.DataFrame:
    rows = [
        {"model": MODEL, "task": "mmlu", "fraction": row.fraction, "strategy": row.strategy, "stage": row.stage,
         "versus": "unpruned", "low": -0.2, "high": -0.05 if row.fraction in resolved_below else 0.02}
        for row in sweep.itertuples() if row.strategy != "none"
    ]  # fmt: skip
    return pd.DataFrame(rows)


def _write(tmp_path, **tables: pd.DataFrame):
    for name, table in tables.items():
        table.to_csv(tmp_path / f"{name}.csv", index=False)
    return {(v.claim, v.model): v for v in claims.ledger(tmp_path)}


def test_deep_blocks_and_shallow_blocks(tmp_path):
    deep = _write(tmp_path, **{"01_blocks": _blocks([8, 7, 6, 5, 4, 3, 2, 1, 0])})
    assert deep[("a", MODEL)].verdict == claims.HELD
    shallow = _write(tmp_path, **{"01_blocks": _blocks([1, 1, 1, 1, 1, 1, 1, 1, 0])})
    assert shallow[("a", MODEL)].verdict == claims.NOT_HELD
    assert "l*(n)" in shallow[("a", MODEL)].evidence and shallow[("a", MODEL)].figure == "01_similarity.html"


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
    assert _write(tmp_path, **{"01_single_layers": layers})[("b", MODEL)].verdict == claims.PARTLY
    layers.loc[5, "D"] = 0.15
    assert _write(tmp_path, **{"01_single_layers": layers})[("b", MODEL)].verdict == claims.NOT_HELD


def test_plateau_then_collapse_is_held_and_an_immediate_drop_is_not(tmp_path):
    sweep = _sweep({0.0: 0.55, 0.1: 0.54, 0.2: 0.53, 0.3: 0.26, 0.4: 0.25})
    found = _write(tmp_path, **{"04_results": sweep, "04_comparisons": _comparisons(sweep, {0.3, 0.4})})
    verdict = found[("c", MODEL)]
    assert verdict.verdict == claims.HELD and "up to 20%" in verdict.evidence
    assert "first at chance at 30%" in verdict.evidence
    assert claims.collapse_point(sweep, _comparisons(sweep, {0.3, 0.4}), "mmlu") == (0.2, 0.3)
    found = _write(tmp_path, **{"04_results": sweep, "04_comparisons": _comparisons(sweep, {0.1, 0.2, 0.3, 0.4})})
    verdict = found[("c", MODEL)]
    assert verdict.verdict == claims.PARTLY and "no fraction removed keeps it" in verdict.evidence


def test_a_model_at_chance_cannot_test_qa_claims(tmp_path):
    sweep = _sweep({0.0: 0.26, 0.2: 0.25})
    found = _write(tmp_path, **{"04_results": sweep, "04_comparisons": _comparisons(sweep, set())})
    assert found[("c", MODEL)].verdict == claims.UNTESTABLE
    assert found[("f", "all")].verdict == claims.UNTESTABLE


def test_larger_models_hold_longer_on_the_ladder(tmp_path):
    small = _sweep({0.0: 0.5, 0.1: 0.26, 0.2: 0.25}).assign(model="small", parameters=10**8)
    large = _sweep({0.0: 0.6, 0.1: 0.58, 0.2: 0.27}).assign(model="large", parameters=10**9)
    ladder = pd.concat([small, large], ignore_index=True)
    comparisons = pd.concat(
        [_comparisons(small, {0.1, 0.2}).assign(model="small"), _comparisons(large, {0.2}).assign(model="large")]
    )
    found = _write(tmp_path, **{"05_across_models": ladder, "05_comparisons": comparisons})
    assert found[("f", "all")].verdict == claims.HELD
    assert "small (100M) first at chance at 10%" in found[("f", "all")].evidence
    swapped = ladder.assign(parameters=ladder["parameters"].iloc[::-1].to_numpy())
    assert _write(tmp_path, **{"05_across_models": swapped})[("f", "all")].verdict == claims.NOT_HELD


def test_healing_and_strategies(tmp_path):
    sweep = _sweep({0.0: 0.55, 0.2: 0.30, 0.4: 0.25}, healed={0.2: 0.33, 0.4: 0.26})
    comparisons = _comparisons(sweep, {0.2, 0.4})
    found = _write(tmp_path, **{"04_results": sweep, "04_comparisons": comparisons})
    assert found[("d", MODEL)].verdict == claims.HELD  # loss recovers most of the way, MMLU a little
    assert found[("e", MODEL)].verdict == claims.PARTLY  # similarity wins before healing; no healed pair compared
    assert "'they meet' is untested (no healed pair above chance on QA)" in found[("e", MODEL)].evidence

    def healed_pair(low: float, high: float) -> pd.DataFrame:
        rows = [
            {
                "model": MODEL,
                "task": "mmlu",
                "fraction": f,
                "strategy": "last",
                "stage": "healed",
                "versus": "similarity",
                "difference": (low + high) / 2,
                "low": low,
                "high": high,
            }
            for f in (0.2, 0.4)
        ]
        return pd.concat([comparisons, pd.DataFrame(rows)], ignore_index=True)  # fmt: skip

    found = _write(tmp_path, **{"04_comparisons": healed_pair(-0.04, 0.03)})
    assert found[("e", MODEL)].verdict == claims.HELD  # ... and the healed accuracies are not resolved apart
    assert "20%: loss of last - similarity = +1.30 nats before healing, +0.02 after" in found[("e", MODEL)].evidence
    assert "healed mmlu, last - similarity = -0.005 [-0.040, +0.030]" in found[("e", MODEL)].evidence
    assert found[("e", MODEL)].evidence.count("(both healed models at chance") == 1  # at 40% (0.26 of 400)
    found = _write(tmp_path, **{"04_comparisons": healed_pair(-0.2, -0.1)})
    assert found[("e", MODEL)].verdict == claims.PARTLY  # healed, the heuristic stays resolved below
    last_better = _versus_similarity(healed_pair(-0.04, 0.03), "pruned", 0.02, 0.09)
    found = _write(tmp_path, **{"04_comparisons": last_better})
    assert "20%: loss of last - similarity = +1.30 nats before healing (mmlu +0.055 [+0.020, +0.090])" in (
        found[("e", MODEL)].evidence
    )
    assert found[("e", MODEL)].verdict == claims.PARTLY  # lower loss, but resolved worse on QA before healing


def _versus_similarity(comparisons: pd.DataFrame, stage: str, low: float, high: float) -> pd.DataFrame:
    """`comparisons` with last against the similarity block at 20% and 40% at `stage`."""
    rows = [
        {"model": MODEL, "task": "mmlu", "fraction": f, "strategy": "last", "stage": stage, "versus": "similarity",
         "difference": (low + high) / 2, "low": low, "high": high}
        for f in (0.2, 0.4)
    ]  # fmt: skip
    return pd.concat([comparisons, pd.DataFrame(rows)], ignore_index=True)


@pytest.mark.parametrize("flip", [False, True])
def test_the_ledger_check_sees_a_changed_result(tmp_path, flip):
    sweep = _sweep({0.0: 0.55, 0.1: 0.54, 0.2: 0.26})
    _write(tmp_path, **{"04_results": sweep, "04_comparisons": _comparisons(sweep, {0.2})})
    claims.ledger_table(tmp_path).to_csv(tmp_path / "07_claims.csv", index=False)
    if flip:
        _write(tmp_path, **{"04_comparisons": _comparisons(sweep, {0.1, 0.2})})
    assert bool(claims.check_ledger(tmp_path, tmp_path / "07_claims.csv")) == flip


def test_prose_states_what_the_tables_hold():

    blocks = _blocks([1, 1, 1, 7, 6, 5, 4, 3, 0]).assign(**{"runner-up start": 2})
    text = prose.depth(blocks)
    assert "$\\ell^*(n)$ = 1, 1, 1, 7, 6" in text and "2 of 5 start in the deeper half" in text
    sweep = _sweep({0.0: 0.55, 0.1: 0.54, 0.2: 0.30}, healed={0.2: 0.33})
    comparisons = _comparisons(sweep, {0.2})
    headline = prose.headline(sweep[sweep["stage"] == "pruned"], comparisons, "mmlu", ["similarity"])
    assert "scores 0.550 [" in headline and "up to 10%" in headline and "reaches chance" not in headline
    dip = _sweep({0.0: 0.55, 0.1: 0.54, 0.2: 0.26, 0.3: 0.40})
    text = prose.headline(dip[dip["strategy"] != "last"], _comparisons(dip, {0.2}), "mmlu", ["similarity"])
    assert "first reaches chance at 20% removed, but is above chance again at 30% (0.400 [0.353, 0.449])" in text
    both = prose.headline(
        sweep.assign(n=(sweep["fraction"] * 10).astype(int)),
        _versus_similarity(comparisons, "pruned", -0.12, -0.02),
        "mmlu",
        ["similarity", "last"],
    )
    assert both.endswith(
        "On the same questions, last minus the similarity block, at the same number of layers removed: 2 layers "
        "-0.070 [-0.120, -0.020], resolved."
    )
    healed = prose.healing(sweep, comparisons, "mmlu")
    assert "similarity, 20%: loss 3.80 -> 3.30 nats healed (unpruned 3.00); mmlu 0.300 -> 0.330" in healed
    assert prose.healing(sweep[sweep["stage"] == "pruned"], comparisons, "mmlu") == ""
    losses = pd.DataFrame(
        {"fraction": [0.2] * 4, "strategy": ["similarity", "last", "random", "random"], "loss": [4, 6, 5, 7]}
    )
    assert prose.selection(losses, 3.0) == (
        "Unpruned: 3.00 nats. 20% removed: similarity lowest (4.00 nats), random 6.00 ± 1.41 over 2 seeds."
    )


def test_a_curve_that_rises_above_chance_after_its_collapse_says_so(tmp_path):
    dip = _sweep({0.0: 0.55, 0.1: 0.54, 0.2: 0.26, 0.3: 0.40, 0.4: 0.25})
    found = _write(tmp_path, **{"04_results": dip, "04_comparisons": _comparisons(dip, {0.2, 0.3, 0.4})})
    evidence = found[("c", MODEL)].evidence
    assert "first at chance at 20%; above chance again at 30%" in evidence and "40%" not in evidence
