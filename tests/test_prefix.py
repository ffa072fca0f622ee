"""Shared prefixes: a pruned copy started from the unpruned model's stored state computes exactly what it computes
alone, on every family, padded or not; passes with a KV cache are never cut short."""

import pytest
import torch

import layerprune as lp
from layerprune.errors import InvalidInputError
from layerprune.prefix import PrefixStates
from layerprune.tiny import TINY_FAMILIES, tiny_model

LAYERS = 6
BLOCK = (3, 4)  # the pruned copy shares layers 0-2 with the unpruned model


def _logits(model, ids, mask=None):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, use_cache=False).logits


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 256, (3, 12), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_a_pruned_copy_started_from_stored_states_computes_what_it_computes_alone(family, ids):
    model = tiny_model(family, num_layers=LAYERS)
    pruned = lp.prune(model, BLOCK)
    mask = torch.ones_like(ids)
    mask[0, 9:] = 0  # one padded row (right padding, as lm-eval pads)
    alone = [_logits(pruned, ids), _logits(pruned, ids, mask)]
    states = PrefixStates()
    with states.sharing(model, LAYERS, {BLOCK[0]}):
        unpruned = [_logits(model, ids), _logits(model, ids, mask)]
    assert torch.equal(unpruned[0], _logits(model, ids)) and states.stored_bytes > 0
    for _ in range(2):  # a stored state serves every copy alike: no pass changes it
        with states.sharing(pruned, BLOCK[0], {BLOCK[0]}):
            shared = [_logits(pruned, ids), _logits(pruned, ids, mask)]
        assert all(torch.equal(a, b) for a, b in zip(alone, shared, strict=True))
    assert states.layers_skipped == 4 * BLOCK[0]  # all four passes started at layer 3


def test_a_deeper_block_starts_from_the_deepest_stored_state_and_runs_on(ids):
    model = tiny_model("llama", num_layers=LAYERS)
    states = PrefixStates()
    with states.sharing(model, LAYERS, {2}):
        _logits(model, ids)
    deeper = lp.prune(model, [4])
    alone = _logits(deeper, ids)
    with states.sharing(deeper, 4, {4}):
        assert torch.equal(_logits(deeper, ids), alone)
    assert (states.layers_skipped, states.layers_run) == (2, LAYERS + 2)  # layers 0-1 skipped, 2-3 run


def test_other_inputs_and_passes_with_a_cache_run_every_layer(ids):
    model = tiny_model("qwen2", num_layers=LAYERS)
    pruned = lp.prune(model, BLOCK)
    states = PrefixStates()
    with states.sharing(model, LAYERS, {BLOCK[0]}):
        _logits(model, ids[:2])
    tokenizer = lp.tiny.byte_tokenizer()
    prompts = ["the union is", "our economy"]
    alone = lp.evaluation.generation.greedy_generate(pruned, tokenizer, prompts, max_new_tokens=6)
    with states.sharing(pruned, BLOCK[0], {BLOCK[0]}):
        assert torch.equal(_logits(pruned, ids), _logits(lp.prune(model, BLOCK), ids))  # another batch: a miss
        assert lp.evaluation.generation.greedy_generate(pruned, tokenizer, prompts, max_new_tokens=6) == alone
    assert states.layers_skipped == 0


def test_the_layers_get_back_their_own_forward(ids):
    model = tiny_model("llama", num_layers=LAYERS)
    layers = lp.get_adapter(model).decoder_layers(model)
    hooked = layers[1].forward  # an instance forward of its own, as accelerate's offload hooks set
    layers[1].forward = hooked
    with PrefixStates().sharing(model, LAYERS, {2}):
        assert "forward" in layers[0].__dict__
    assert "forward" not in layers[0].__dict__ and layers[1].__dict__["forward"] is hooked


def test_sharing_on_a_pruned_copy_stays_on_that_copy(ids):
    """Pruned copies share their tensors with their source but not their modules: swapping a copy's layer forwards
    touches neither the source nor another copy, inside the sweep or after it."""
    model = tiny_model("llama", num_layers=LAYERS)
    first, second = lp.prune(model, BLOCK), lp.prune(model, BLOCK)
    expected = [_logits(m, ids) for m in (model, second)]
    states = PrefixStates()
    with states.sharing(model, LAYERS, {BLOCK[0]}):
        _logits(model, ids)
    with states.sharing(first, BLOCK[0], {BLOCK[0]}):
        for other in (model, second):
            assert not any("forward" in vars(layer) for layer in lp.get_adapter(other).decoder_layers(other))
        assert all(torch.equal(_logits(m, ids), e) for m, e in zip((model, second), expected, strict=True))
        _logits(first, ids)
    assert states.layers_skipped == BLOCK[0]  # only the copy's own pass started from the stored state
    assert all(torch.equal(_logits(m, ids), e) for m, e in zip((model, second), expected, strict=True))


def test_nothing_is_stored_past_the_memory_limit(ids):
    model = tiny_model("llama", num_layers=LAYERS)
    states = PrefixStates(max_bytes=0)
    with states.sharing(model, LAYERS, {2, 3}):
        expected = _logits(model, ids)
        assert torch.equal(_logits(model, ids), expected)
    assert states.stored_bytes == 0 and states.layers_skipped == 0


@pytest.mark.parametrize(("shared", "store_at"), [(LAYERS + 1, ()), (3, {4}), (3, {0}), (-1, ())])
def test_bad_arguments_get_one_clear_error(shared, store_at):
    with pytest.raises(InvalidInputError), PrefixStates().sharing(tiny_model("llama", LAYERS), shared, store_at):
        pass


def test_retain_keeps_only_the_states_later_passes_start_from(ids):
    model = tiny_model("llama", num_layers=LAYERS)
    states = PrefixStates()
    with states.sharing(model, LAYERS, {1, 2, 4}):
        _logits(model, ids)
    per_state = states.stored_bytes // 3
    states.retain({3})  # a pass sharing 3 layers starts from layer 2's state: those at 1 and 4 are read by none
    assert states.stored_bytes == per_state
    deeper = lp.prune(model, [4])
    alone = _logits(deeper, ids)
    with states.sharing(deeper, 4, ()):
        assert torch.equal(_logits(deeper, ids), alone)
    assert states.layers_skipped == 2  # it started at layer 2: the state at 4 is gone
    states.retain(())
    assert states.stored_bytes == 0
