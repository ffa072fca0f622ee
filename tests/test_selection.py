import numpy as np
import pytest
import torch

from layerprune.errors import InvalidInputError
from layerprune.selection import (
    STRATEGIES,
    BlockSelection,
    block_for_fraction,
    layers_for_fraction,
    profile_free_block,
    select_block,
)
from layerprune.similarity import DistanceProfile

LAYERS = 6
# Single-layer distances D[1, l] for l = 0..5: layers 1 and 4 are the least influential, the last the most.
SINGLE = [0.30, 0.05, 0.20, 0.25, 0.06, 0.50]


def _profile() -> DistanceProfile:
    """D[n, l] = the sum of the single-layer distances of layers l..l+n-1 (a hand-made, additive profile)."""
    mean = np.full((LAYERS + 1, LAYERS + 1), np.nan)
    for n in range(LAYERS + 1):
        for start in range(LAYERS - n + 1):
            mean[n, start] = sum(SINGLE[start : start + n])
    return DistanceProfile(mean, np.zeros_like(mean), 10, LAYERS, "0" * 16, "hand-made", "last", "angular")


def test_similarity_takes_the_block_with_the_smallest_distance():
    profile = _profile()
    assert select_block(profile, 1) == BlockSelection((1,), 1, "similarity", 0.05, 1)
    two = select_block(profile, 2)
    assert two.layers == (1, 2) and two.start == 1 and two.distance == pytest.approx(0.25)
    three = select_block(profile, 3, "similarity")
    assert three.layers == (1, 2, 3) and three.distance == pytest.approx(0.50)


def test_ties_go_to_the_shallowest_block():
    profile = _profile()
    profile.mean[2, :5] = 0.1
    assert select_block(profile, 2).layers == (0, 1)


def test_last_keeps_the_final_layer():
    profile = _profile()
    assert select_block(profile, 2, "last") == BlockSelection((3, 4), 2, "last", pytest.approx(0.31), 3)
    assert select_block(profile, LAYERS - 1, "last").layers == (0, 1, 2, 3, 4)
    assert profile_free_block(LAYERS, 2, "last") == BlockSelection((3, 4), 2, "last", None, 3)


def test_random_is_a_seeded_contiguous_block():
    profile = _profile()
    picks = [select_block(profile, 3, "random", seed=seed) for seed in range(20)]
    assert picks[0] == select_block(profile, 3, "random", seed=0)
    assert len({p.start for p in picks}) > 1
    for pick in picks:
        assert pick.layers == tuple(range(pick.start, pick.start + 3)) and 0 <= pick.start <= LAYERS - 3
        assert pick.distance == pytest.approx(profile.mean[3, pick.start])
    assert profile_free_block(LAYERS, 3, "random", seed=5).layers == select_block(profile, 3, "random", seed=5).layers


def test_random_draws_distinct_blocks_across_seeds_and_a_new_order_for_each_n():
    for n in (1, 5, 12):
        blocks = [profile_free_block(30, n, "random", seed=seed).layers for seed in range(10)]
        assert len(set(blocks)) == 10  # no block drawn twice while any is left
        every = {profile_free_block(30, n, "random", seed=seed).layers for seed in range(31 - n)}
        assert len(every) == 31 - n
    starts = [profile_free_block(30, n, "random", seed=0).start for n in range(1, 10)]
    assert len(set(starts)) > 3  # seed 0 does not start at the same layer for every n


def test_block_influence_takes_the_least_influential_single_layers():
    selection = select_block(_profile(), 2, "block_influence")
    assert selection.layers == (1, 4) and selection.start is None
    assert selection.distance == pytest.approx(0.11)
    assert select_block(_profile(), 3, "block_influence").layers == (1, 2, 4)


@pytest.mark.parametrize("n", [0, -1, LAYERS, LAYERS + 1, 2.0, True, "2", None])
def test_bad_n_is_refused_for_every_strategy(n):
    for strategy in STRATEGIES:
        with pytest.raises(InvalidInputError, match=r"1\.\.5"):
            select_block(_profile(), n, strategy)


def test_unknown_strategy_and_profile_free_misuse():
    with pytest.raises(InvalidInputError, match=r"'best'.*'similarity', 'last', 'random', 'block_influence'"):
        select_block(_profile(), 2, "best")
    with pytest.raises(InvalidInputError, match="needs a distance profile"):
        profile_free_block(LAYERS, 2, "similarity")


def test_fractions():
    assert layers_for_fraction(30, 0.1) == 3
    assert layers_for_fraction(30, 0.25) == 8
    assert layers_for_fraction(10, 0.25) == 3
    assert layers_for_fraction(30, 0) == 0
    for fraction in (1, 1.0, -0.1, 1.5, "0.5", None, float("nan")):
        with pytest.raises(InvalidInputError, match="fraction"):
            layers_for_fraction(30, fraction)
    with pytest.raises(InvalidInputError, match="num_layers"):
        layers_for_fraction(0, 0.5)


def test_block_for_fraction():
    assert block_for_fraction(_profile(), 0.5, "last").layers == (2, 3, 4)
    assert block_for_fraction(_profile(), 0.2, "last").layers == (4,)
    assert block_for_fraction(LAYERS, 0.5, "last") == block_for_fraction(_profile(), 0.5, "last").__class__(
        (2, 3, 4), 3, "last", None, 2
    )
    assert block_for_fraction(_profile(), 0.05) is None  # rounds to no layer: the unpruned model
    assert block_for_fraction(_profile(), 0.5) == select_block(_profile(), 3)
    with pytest.raises(InvalidInputError, match=r"fraction 0\.95 of 6 layers is 6"):
        block_for_fraction(_profile(), 0.95)
    with pytest.raises(InvalidInputError, match="needs a distance profile"):
        block_for_fraction(LAYERS, 0.5, "similarity")


@pytest.fixture
def first_layers():
    """A strategy registered in one place: remove the first n layers."""
    from layerprune.selection import Strategy, register_strategy

    strategy = register_strategy(
        Strategy("first", lambda profile, layers, n, seed: tuple(range(n)), "#123456", "v", "first layers", None)
    )
    yield strategy
    STRATEGIES.pop("first")


def test_a_strategy_registered_once_shows_in_a_sweep_a_figure_and_a_table(first_layers, isolated_cache):
    import layerprune as lp
    from layerprune.book import plots, tables

    model, tokenizer = lp.load_model("tiny-llama")
    ids = torch.randint(0, 256, (12, 16), generator=torch.Generator().manual_seed(0))
    profile = lp.profile_distances(model, ids[:8], progress=False)
    result = lp.study.sweep(
        model, tokenizer, profile, {"heldout": ids[8:]}, fractions=[0.0, 0.5], strategies=["similarity", "first"]
    )
    assert result.rows[result.find(strategy="first")]["layers"] == "0 1 2 3"
    figure = plots.metric_vs_fraction(result.rows, "loss")
    handles, labels = figure.axes[0].get_legend_handles_labels()
    drawn = dict(zip(labels, handles, strict=True))["first layers, not healed"].lines[0]
    assert drawn.get_color() == "#123456" and drawn.get_marker() == "v"
    table = tables.selection_table(profile, [0.5], ["first"])
    assert list(table["strategy"]) == ["first"] and list(table["layers"]) == ["0-3"]
