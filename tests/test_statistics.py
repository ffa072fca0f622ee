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
    assert result.p_value < 1e-6 and result.low < result.difference < result.high
    null = statistics.paired_comparison(a, same)
    assert not null.resolved and null.difference == 0 and null.p_value == 1.0
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
