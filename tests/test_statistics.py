import math

import numpy as np
import pytest
import torch

from layerprune.errors import InvalidInputError
from layerprune.similarity import profile_distances
from layerprune.study import statistics
from layerprune.tiny import tiny_model


def test_wilson_interval_matches_the_textbook_values():
    low, high = statistics.wilson_interval(50, 100)
    assert (round(low, 4), round(high, 4)) == (0.4038, 0.5962)
    assert statistics.wilson_interval(0, 10)[0] == pytest.approx(0.0, abs=1e-12)
    assert all(math.isnan(x) for x in statistics.wilson_interval(0, 0))


def test_mcnemar_exact_is_the_two_sided_binomial():
    assert statistics.mcnemar_exact(0, 0) == 1.0
    assert statistics.mcnemar_exact(0, 5) == pytest.approx(2 / 32)
    assert statistics.mcnemar_exact(3, 3) == 1.0
    assert statistics.mcnemar_exact(1, 9) == statistics.mcnemar_exact(9, 1) == pytest.approx(2 * 11 / 1024)


def test_paired_comparison_resolves_a_real_difference_and_not_noise():
    rng = np.random.default_rng(0)
    questions = [f"q{i}" for i in range(400)]
    a = {q: float(rng.random() < 0.5) for q in questions}
    better = {q: 1.0 if rng.random() < 0.4 else v for q, v in a.items()}  # right on ~40% of A's misses
    same = dict(a)
    result = statistics.paired_comparison(a, better)
    assert result.resolved and result.difference > 0.1 and result.b_only > 0 and result.a_only == 0
    assert result.p_value < 1e-6 and result.low < result.difference <= result.high  # every discordant pair is B's
    assert result.outcome == statistics.DIFFERENT
    null = statistics.paired_comparison(a, same)
    assert not null.resolved and null.difference == 0 and null.p_value == 1.0
    assert null.outcome == statistics.EQUIVALENT  # 400 questions, not one answered differently
    with pytest.raises(InvalidInputError, match="share no question"):
        statistics.paired_comparison({"x": 1.0}, {"y": 0.0})


def test_bootstrap_blocks_agrees_with_the_profile_and_sees_its_instability():
    torch_ids = torch.randint(0, 256, (12, 10), generator=torch.Generator().manual_seed(0))
    profile = profile_distances(tiny_model("llama", num_layers=5), torch_ids, progress=False, keep_sequences=True)
    rows = statistics.bootstrap_blocks(profile, draws=200)
    assert [row.n for row in rows] == [1, 2, 3, 4]
    for row in rows:
        assert row.start == int(np.argmin(profile.curve(row.n)))
        assert row.low <= row.distance <= row.high and 0 < row.same_start <= 1
    with pytest.raises(InvalidInputError, match="keep_sequences"):
        statistics.bootstrap_blocks(profile_distances(tiny_model("llama", num_layers=5), torch_ids, progress=False))


def test_the_interval_excludes_zero_exactly_when_mcnemar_rejects():
    """Over every split of up to 80 discordant pairs among 300 questions: the 95% interval, and the raw
    Clopper-Pearson interval of the split before it is mapped, exclude 0 (1/2) exactly when McNemar's p < 0.05;
    the equivalence p is below 0.05 exactly when the 90% interval lies inside the margin."""
    for a_only in range(0, 81, 2):
        for b_only in range(0, 81, 3):
            paired = statistics.counts_comparison(300, a_only, b_only)
            rejects = paired.p_value < statistics.ALPHA
            assert statistics.excludes_zero(paired.low, paired.high) == rejects == paired.resolved, (a_only, b_only)
            assert paired.low <= paired.difference <= paired.high
            assert paired.low90 <= paired.difference <= paired.high90
            if a_only + b_only:
                low, high = statistics.clopper_pearson(b_only, a_only + b_only)
                assert (low > 0.5 or high < 0.5) == rejects, (a_only, b_only)
            inside = -paired.margin < paired.low90 and paired.high90 < paired.margin
            assert inside == (paired.p_equivalence < statistics.ALPHA), (a_only, b_only)


def test_three_outcomes_and_the_detectable_difference():
    same = statistics.counts_comparison(600, 6, 7)  # 13 of 600 questions differ: |difference| < 0.05 shown
    assert same.outcome == statistics.EQUIVALENT and not same.resolved
    drop = statistics.counts_comparison(300, 60, 10)
    assert drop.outcome == statistics.DIFFERENT and drop.difference == pytest.approx(-50 / 300)
    underpowered = statistics.counts_comparison(200, 20, 14)  # -3 points, neither resolved nor within the margin
    assert underpowered.outcome == statistics.INCONCLUSIVE
    assert underpowered.detectable > statistics.MARGINS["accuracy"].value > abs(underpowered.difference)
    few = statistics.counts_comparison(4, 0, 0)  # four questions on which two models agree show nothing
    assert few.outcome == statistics.INCONCLUSIVE and few.high90 > 0.5
    assert statistics.counts_comparison(300, 0, 0).outcome == statistics.EQUIVALENT
    with pytest.raises(InvalidInputError, match="impossible counts"):
        statistics.counts_comparison(10, 8, 5)


def test_holm_adjusts_within_a_family():
    assert statistics.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    adjusted = statistics.holm([0.5, math.nan])
    assert adjusted[0] == 0.5 and math.isnan(adjusted[1])


def test_graded_comparison_is_a_paired_t_test_with_equivalence():
    rng = np.random.default_rng(1)
    questions = [f"q{i}" for i in range(300)]
    a = {q: float(rng.uniform(0.2, 0.9)) for q in questions}
    close = {q: v + float(rng.normal(0, 0.05)) for q, v in a.items()}
    lower = {q: v - 0.1 + float(rng.normal(0, 0.05)) for q, v in a.items()}
    same = statistics.graded_comparison(a, close)
    assert same.outcome == statistics.EQUIVALENT and same.low < same.difference < same.high
    assert same.detectable == pytest.approx(2.80 * same.sd / math.sqrt(300), rel=0.02)
    down = statistics.graded_comparison(a, lower)
    assert down.outcome == statistics.DIFFERENT and down.high < 0 and down.p_value < 1e-6
    few = statistics.graded_comparison({"x": 0.5, "y": 0.4}, {"x": 0.6, "y": 0.2})
    assert few.outcome == statistics.INCONCLUSIVE


def test_at_chance_needs_the_interval_below_the_margin():
    assert statistics.at_chance(0.25, 300, 0.25) and statistics.at_chance(0.15, 300, 0.25)  # below chance too
    assert not statistics.at_chance(0.28, 300, 0.25)  # within 5 points, but not shown to be
    assert not statistics.at_chance(0.25, 20, 0.25)  # too few questions to show anything
    assert statistics.above_chance(0.40, 300, 0.25) and not statistics.above_chance(0.28, 300, 0.25)


def test_block_comparison_pairs_the_same_blocks():
    a = [3.0, 4.0, 5.0, 6.0]
    b = [3.2, 4.1, 5.3, 6.2]  # harder and easier blocks alike: the pairing removes that spread
    found = statistics.block_comparison(a, b)
    diff = np.array(b) - np.array(a)
    half = 3.182446 * diff.std(ddof=1) / 2  # t(0.975, 3) x sd / sqrt(4)
    assert found.difference == pytest.approx(0.2) and found.questions == 4
    assert (found.low, found.high) == pytest.approx((0.2 - half, 0.2 + half), rel=1e-5)
    assert found.outcome == statistics.DIFFERENT and found.margin == statistics.MARGINS["loss"].value
    unpaired = statistics.block_comparison(a, list(reversed(b)))  # the same values, other blocks: no resolution
    assert unpaired.low < 0 < unpaired.high
    with pytest.raises(InvalidInputError, match="pair up"):
        statistics.block_comparison(a, b[:3])


def test_net_recovery_subtracts_the_control():
    row = {"unpruned": 3.0, "pruned": 3.8, "pruned + healed": 3.3, "unpruned + healed": 2.9}
    found = statistics.net_recovery(row)
    assert found == pytest.approx({"gap": 0.8, "control": 0.1, "net": 0.4, "share": 0.5})
