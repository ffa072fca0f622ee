"""The results grid on a tiny model: stages, per-question scores and paired comparisons."""

import contextlib

import pytest
import torch

import layerprune as lp
from layerprune.prefix import PrefixStates
from layerprune.study import sweeps as grid
from layerprune.study.steps import cached_profile


def _tiny_sweep(**options) -> grid.SweepResult:
    """tiny-llama swept at 0, 1/4 and 1/2 of its layers with both strategies, six ARC-Easy questions a point
    (`options`: further arguments of `sweep`), in the cache LAYERPRUNE_CACHE names."""
    model, tokenizer = lp.load_model("tiny-llama")
    ids = torch.randint(0, 256, (24, 16), generator=torch.Generator().manual_seed(0))
    blocks = {"profile": ids[:8], "heal": ids[8:20], "heldout": ids[20:]}
    profile = cached_profile(model, blocks["profile"], progress=False)
    return grid.sweep(
        model, tokenizer, profile, blocks, fractions=[0.0, 0.25, 0.5], strategies=["similarity", "last"],
        tasks=["arc_easy"], limits={"arc_easy": 6}, **options,
    )  # fmt: skip


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LAYERPRUNE_CACHE", str(tmp_path_factory.mktemp("cache")))
        result = _tiny_sweep(heal_fractions=[0.25], heal_settings={"steps": 2, "batch_size": 2, "warmup": 0, "rank": 2})
        yield result, grid.comparisons(result, ["arc_easy"])


def test_every_stage_is_a_row_with_its_questions(swept):
    result, _ = swept
    stages = [(r["fraction"], r["strategy"], r["stage"]) for r in result.rows]
    assert stages.count((0.25, "similarity", "quantized")) == 1 and stages.count((0.25, "last", "healed")) == 1
    assert (0.5, "similarity", "healed") not in stages and stages[0] == (0.0, "none", "pruned")
    ids = {frozenset(q["arc_easy"]) for q in result.questions}
    assert len(ids) == 1 and len(next(iter(ids))) == 6  # the same six questions for every model
    for row, questions in zip(result.rows, result.questions, strict=True):
        assert row["arc_easy n"] == 6 and row["arc_easy"] == pytest.approx(sum(questions["arc_easy"].values()) / 6)


def test_shared_prefixes_change_nothing_but_the_work(swept, tmp_path, monkeypatch):
    monkeypatch.setenv("LAYERPRUNE_CACHE", str(tmp_path))  # nothing cached: every layer of every model runs
    alone = _tiny_sweep(share_prefixes=False)
    shared, _ = swept
    pruned = [i for i, row in enumerate(shared.rows) if row["stage"] == "pruned"]
    assert [shared.rows[i] for i in pruned] == alone.rows
    assert [shared.questions[i] for i in pruned] == alone.questions


def test_first_points_ask_more_questions_and_comparisons_pair_the_shared_ones(swept, tmp_path, monkeypatch):
    monkeypatch.setenv("LAYERPRUNE_CACHE", str(tmp_path))
    result = _tiny_sweep(first_limits={"arc_easy": 9})
    asked = {(row["fraction"], row["strategy"]): row["arc_easy n"] for row in result.rows}
    first = {(0.0, "none"): 9, (0.25, "similarity"): 9, (0.25, "last"): 9}
    assert asked == {**first, (0.5, "similarity"): 6, (0.5, "last"): 6}
    evenly, _ = swept  # the same sweep with six questions everywhere: the same scores on the six
    for row, questions in zip(result.rows, result.questions, strict=True):
        six = evenly.questions[evenly.find(fraction=row["fraction"], strategy=row["strategy"], stage="pruned")]
        assert set(six["arc_easy"]) <= set(questions["arc_easy"])
        assert all(questions["arc_easy"][q] == score for q, score in six["arc_easy"].items())
    rows = grid.comparisons(result, ["arc_easy"])
    paired = {(r["fraction"], r["strategy"], r["versus"]): r["questions"] for r in rows}
    assert paired[(0.25, "similarity", "unpruned")] == 9 and paired[(0.5, "similarity", "unpruned")] == 6
    assert paired[(0.5, "last", "similarity")] == 6


def test_first_points_score_the_shared_questions_in_the_batches_of_the_others(tmp_path, monkeypatch):
    """The questions the first points add are scored as an evaluation of their own, so the shared ones run in the
    batches every point runs them in: the points after the first skip as many layers (starting from the unpruned
    model's stored states) as in a sweep without the extra questions."""
    skipped: list[int] = []

    class Recorded(PrefixStates):
        @contextlib.contextmanager
        def sharing(self, *args, **kwargs):
            before = self.layers_skipped
            with super().sharing(*args, **kwargs) as model:
                yield model
            skipped.append(self.layers_skipped - before)

    monkeypatch.setattr(grid, "PrefixStates", Recorded)
    later = {}
    for first in (None, {"arc_easy": 9}):
        monkeypatch.setenv("LAYERPRUNE_CACHE", str(tmp_path / str(first is None)))  # nothing cached
        skipped.clear()
        result = _tiny_sweep(first_limits=first)
        points = [(row["fraction"], row["strategy"]) for row in result.rows]
        later[first is None] = [count for point, count in zip(points, skipped, strict=True) if point[0] == 0.5]
    assert later[False] == later[True] and sum(later[True]) > 0


def test_comparisons_pair_each_row_with_its_references(swept):
    result, rows = swept
    versus = {(r["fraction"], r["strategy"], r["stage"], r["versus"]) for r in rows}
    assert (0.25, "similarity", "healed", "pruned") in versus and (0.25, "last", "healed", "similarity") in versus
    assert (0.5, "last", "pruned", "unpruned") in versus and all(r["questions"] == 6 for r in rows)
    unpruned = result.find(strategy="none")
    same = [r for r in rows if r["versus"] == "unpruned" and r["strategy"] == "similarity" and r["fraction"] == 0.5]
    expected = result.rows[result.find(fraction=0.5, strategy="similarity")]["arc_easy"]
    assert same[0]["difference"] == pytest.approx(expected - result.rows[unpruned]["arc_easy"])


def test_random_draws_are_averaged_per_fraction():
    from layerprune.study.steps import mean_over_seeds

    rows = [
        {"fraction": 0.2, "n": 2, "strategy": "similarity", "seed": 0, "loss": 4.0},
        {"fraction": 0.2, "n": 2, "strategy": "random", "seed": 0, "loss": 5.0},
        {"fraction": 0.2, "n": 2, "strategy": "random", "seed": 1, "loss": 7.0},
    ]
    summary = mean_over_seeds(rows)
    assert summary[0]["strategy"] == "similarity" and summary[1]["loss"] == 6.0
    assert summary[1]["loss sd"] == pytest.approx(2**0.5) and summary[1]["seeds"] == 2


def test_graded_scores_add_graded_columns_and_holm_within_each_family():
    rows = [
        {"model": "m", "fraction": f, "strategy": s, "stage": "pruned", "arc_easy": 0.5}
        for f, s in ((0.0, "none"), (0.25, "similarity"), (0.5, "similarity"))
    ]
    ids = [f"q{i}" for i in range(40)]
    right = [{"arc_easy": {q: float(i % 2) for i, q in enumerate(ids)}}] * 3
    graded = [{"arc_easy": {q: 0.5 + 0.01 * (i % 3) - 0.1 * k for i, q in enumerate(ids)}} for k in range(3)]
    plain = grid.comparisons(grid.SweepResult(rows, right), ["arc_easy"])
    assert all("graded p" not in row and row["outcome"] in ("equivalent", "inconclusive") for row in plain)
    both = grid.comparisons(grid.SweepResult(rows, right, graded), ["arc_easy"])
    assert [row["graded outcome"] for row in both] == ["different", "different"]
    assert both[1]["graded difference"] == pytest.approx(-0.2)
    assert both[0]["graded p holm"] >= both[0]["graded p"] and both[0]["p holm"] == pytest.approx(1.0)


def test_random_draws_count_distinct_blocks():
    from layerprune.study.steps import mean_over_seeds

    rows = [
        {"fraction": 0.2, "n": 2, "strategy": "random", "seed": seed, "layers": layers, "loss": loss}
        for seed, layers, loss in ((0, [1, 2], 5.0), (1, [1, 2], 5.0), (2, [4, 5], 7.0))
    ]
    (summary,) = mean_over_seeds(rows)
    assert summary["seeds"] == 2 and summary["loss"] == 6.0
