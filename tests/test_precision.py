"""bfloat16 against float32 on a tiny random model: the speed report's rows and goals, the agreement's rows, a
model's exact agreement with itself, and McNemar's exact p. No assertion on timings."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from layerprune import speed
from layerprune.book import prose
from layerprune.similarity import DistanceProfile
from layerprune.speed import precision

TINY = "tiny-llama"
TINY_LAYERS = 8


pytestmark = pytest.mark.usefixtures("one_thread")


def _agreement(corpus: str, dtypes: tuple[str, str]) -> dict[str, dict]:
    rows = speed.precision_agreement(
        TINY,
        profile_blocks=4,
        heldout_blocks=2,
        arc_questions=6,
        block_size=16,
        batch_size=2,
        corpus=corpus,
        dtypes=dtypes,
        progress=False,
    )
    assert all(tuple(row) == speed.AGREEMENT_KEYS for row in rows)
    return {row["measure"]: row for row in rows}


def test_goals_that_apply():
    def goals(model: str, forward: float, peak: float, amx: bool, native: bool) -> list:
        return speed.precision_checks(model, forward, peak, amx=amx, native_bf16=native)

    assert goals("smollm2-135m", 2.0, 500.0, amx=False, native=False) == []
    (forward,) = goals("smollm2-135m", 2.0, 500.0, amx=True, native=True)
    assert forward.target == 3.0 and not forward.met
    (no_slower,) = goals("smollm2-135m", 0.9, 500.0, amx=False, native=True)
    assert no_slower.target == 1.0 and "AVX512-BF16" in no_slower.measure and not no_slower.met
    checks = goals("qwen2.5-coder-1.5b", 7.0, 3600.0, amx=True, native=True)
    assert [c.target for c in checks] == [6.0, pytest.approx(5722.05, abs=0.01)] and all(c.met for c in checks)
    (peak,) = goals("qwen2.5-coder-1.5b", 1.0, 6000.0, amx=False, native=False)
    assert not peak.higher_is_better and not peak.met


def test_precision_speed_report(corpus, monkeypatch):
    monkeypatch.setitem(precision.FORWARD_GOALS, TINY, 1.0)
    monkeypatch.setitem(precision.BF16_PEAK_GOALS_MIB, TINY, 1e6)
    monkeypatch.setattr(precision, "amx_cpu", lambda: True)
    report = speed.precision_speed(
        TINY,
        blocks=2,
        block_size=16,
        batch_size=2,
        repeats=1,
        threads=1,
        heal_steps=1,
        heal_batch_size=2,
        questions=2,
        corpus=corpus,
        progress=False,
    )
    table = report.table()
    assert list(table.columns) == ["work", "unit", "float32", "bfloat16", "float32 / bfloat16", "per round"]
    assert list(table["unit"]) == ["s (best)"] * 4 + ["MiB"] * 3
    assert (table[["float32", "bfloat16", "float32 / bfloat16"]] > 0).all().all()
    measures = ["float32 / bfloat16 forward time (AMX)", "bfloat16 process peak MiB (load, profile)"]
    assert [check.measure for check in report.checks] == measures
    assert torch.get_num_threads() == 1


def test_a_model_agrees_exactly_with_itself(corpus, isolated_cache):
    rows = _agreement(corpus, ("float32", "float32"))
    assert rows["max |D(float32) - D(float32)| over every n, l"]["value"] == 0.0
    same = rows[f"n of 1..{TINY_LAYERS - 1} with the same l*(n)"]
    assert same["value"] == TINY_LAYERS - 1 and same["detail"] == "all the same"
    assert rows["held-out loss, float32 - float32 (nats)"]["value"] == 0.0
    assert rows["questions right only in float32"]["value"] == 0
    assert rows["McNemar's exact p (two-sided)"]["value"] == 1.0
    assert rows["ARC-Easy accuracy, float32"]["detail"] == "the same 6 questions"


def test_bfloat16_against_float32(corpus, isolated_cache):
    rows = _agreement(corpus, ("float32", "bfloat16"))
    assert 0 < rows["max |D(bfloat16) - D(float32)| over every n, l"]["value"] < 0.5
    assert 0 <= rows[f"n of 1..{TINY_LAYERS - 1} with the same l*(n)"]["value"] <= TINY_LAYERS - 1
    losses = [rows[f"held-out loss, {dtype} (nats)"]["value"] for dtype in ("float32", "bfloat16")]
    assert all(math.isfinite(loss) and loss > 0 for loss in losses)
    assert 0 < rows["McNemar's exact p (two-sided)"]["value"] <= 1
    text = prose.precision(pd.DataFrame(rows.values()))
    same = rows[f"n of 1..{TINY_LAYERS - 1} with the same l*(n)"]["value"]
    assert f"the same for {same} of the {TINY_LAYERS - 1} block sizes" in text
    accuracy = rows["ARC-Easy accuracy, bfloat16"]["value"]
    assert "On the same 6 ARC-Easy questions" in text and f"{accuracy:.3f} in bfloat16" in text


def _profile(rows: list[list[float]]) -> DistanceProfile:
    layers = len(rows) - 1
    mean = np.full((layers + 1, layers + 1), np.nan)
    for n, row in enumerate(rows):
        mean[n, : len(row)] = row
    return DistanceProfile(mean, np.zeros_like(mean), 1, layers, "x", "x", "last", "angular")


def test_profile_rows_name_the_block_sizes_whose_block_moved():
    reference = _profile([[0.0] * 4, [0.3, 0.1, 0.2], [0.5, 0.4], [0.6]])
    compared = _profile([[0.0] * 4, [0.3, 0.1, 0.2], [0.39, 0.4], [0.6]])
    largest, same = precision.profile_rows(reference, compared, names=("a", "b"))
    assert largest["value"] == pytest.approx(0.11) and largest["detail"].startswith("at n=2, l=0;")
    assert same["value"] == 1 and "n=2: 1/0 (D gap 1.0e-01 in a)" in same["detail"]
