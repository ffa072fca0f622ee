"""A model placed by accelerate (device_map, offloaded to CPU and disk) gives the results of the whole model."""

import numpy as np
import pytest
import torch

import layerprune as lp
from layerprune.adapters import model_device
from layerprune.errors import InvalidInputError
from layerprune.evaluation.generation import greedy_generate

NAME = "tiny-llama"  # 8 layers, hidden 64, untied head


def split_map(num_layers: int) -> dict[str, str]:
    """Embeddings, odd layers and the head on disk; the rest on the CPU."""
    layers = {f"model.layers.{i}": "disk" if i % 2 else "cpu" for i in range(num_layers)}
    return {"model.embed_tokens": "disk", **layers, "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "disk"}


@pytest.fixture(scope="module")
def whole():
    return lp.load_model(NAME, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def offloaded(whole, tmp_path_factory):
    model, _ = lp.load_model(
        NAME,
        device="cpu",
        dtype="float32",
        device_map=split_map(whole[0].config.num_hidden_layers),
        offload_folder=tmp_path_factory.mktemp("offload"),
    )
    return model


@pytest.fixture(scope="module")
def blocks():
    return torch.randint(0, 256, (6, 24), generator=torch.Generator().manual_seed(0))


def test_device_map_offloads_and_inputs_go_to_the_embeddings_device(offloaded):
    assert set(offloaded.hf_device_map.values()) == {"cpu", "disk"}
    assert offloaded.model.embed_tokens.weight.device.type == "meta"  # its weights stay on disk
    assert model_device(offloaded) == torch.device("cpu")


def test_an_offloaded_model_has_the_identity_of_the_whole_model(whole, offloaded):
    assert lp.model_identity(offloaded) == lp.model_identity(whole[0])  # offloaded weights are read from disk


def test_profile_matches_the_whole_model(whole, offloaded, blocks):
    reference = lp.profile_distances(whole[0], blocks, batch_size=4, progress=False)
    split = lp.profile_distances(offloaded, blocks, batch_size=4, progress=False)
    assert split.model_identity == reference.model_identity
    np.testing.assert_allclose(split.mean, reference.mean, rtol=1e-6, atol=1e-9, equal_nan=True)
    np.testing.assert_allclose(split.std, reference.std, rtol=1e-6, atol=1e-9, equal_nan=True)


def test_heldout_loss_and_logit_lens_match(whole, offloaded, blocks):
    assert lp.heldout_loss(offloaded, blocks, progress=False).loss == pytest.approx(
        lp.heldout_loss(whole[0], blocks, progress=False).loss, rel=1e-6
    )
    split, reference = (lp.logit_lens(m, blocks, progress=False) for m in (offloaded, whole[0]))
    np.testing.assert_allclose(split.loss, reference.loss, rtol=1e-6)
    np.testing.assert_allclose(split.to_final_prenorm, reference.to_final_prenorm, rtol=1e-6, atol=1e-9)
    assert split.agreement == reference.agreement


def test_greedy_generation_matches(whole, offloaded):
    model, tokenizer = whole
    prompts = ["The deeper layers", "abc"]
    assert greedy_generate(offloaded, tokenizer, prompts, max_new_tokens=12) == greedy_generate(
        model, tokenizer, prompts, max_new_tokens=12
    )


def test_pruning_an_offloaded_model_keeps_its_placement_and_results(whole, offloaded, blocks, tmp_path):
    model, tokenizer = whole
    reference = lp.prune(model, [2, 3, 5])
    placement_before = dict(offloaded.hf_device_map)
    pruned = lp.prune(offloaded, [2, 3, 5])  # kept: old layers 0 1 4 6 7, on cpu disk cpu cpu disk
    assert offloaded.hf_device_map == placement_before and len(offloaded.model.layers) == 8
    hook = pruned.model.layers[4].mlp.up_proj._hf_hook  # old layer 7, on disk: it reads the source's weights map
    assert hook.weights_map is offloaded.model.layers[7].mlp.up_proj._hf_hook.weights_map
    kept, source = pruned.model.layers[2].mlp.up_proj.weight, offloaded.model.layers[4].mlp.up_proj.weight
    assert kept.data_ptr() == source.data_ptr() and kept is not source  # a layer on the CPU: shared, not copied
    placement = {name: device for name, device in pruned.hf_device_map.items() if name.startswith("model.layers.")}
    assert placement == {f"model.layers.{i}": device for i, device in enumerate(["cpu", "disk", "cpu", "cpu", "disk"])}
    with torch.no_grad():
        torch.testing.assert_close(pruned(blocks).logits, reference(blocks).logits, rtol=1e-6, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(offloaded(blocks).logits, model(blocks).logits, rtol=1e-6, atol=1e-6)
    pruned.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    reloaded, _ = lp.load_model(tmp_path, device="cpu", dtype="float32")
    assert reloaded.config.num_hidden_layers == 5
    with torch.no_grad():
        torch.testing.assert_close(reloaded(blocks).logits, reference(blocks).logits, rtol=1e-6, atol=1e-6)


def test_max_memory_spills_to_disk_without_an_offload_folder(blocks, whole):
    model, _ = lp.load_model(NAME, device="cpu", dtype="float32", device_map="auto", max_memory={"cpu": "200KB"})
    assert "disk" in model.hf_device_map.values()
    with torch.no_grad():
        torch.testing.assert_close(model(blocks).logits, whole[0](blocks).logits, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"device_map": "everywhere"}, "device_map 'everywhere' is not one of"),
        ({"device_map": ["cpu"]}, "device_map must be one of"),
        ({"max_memory": {"cpu": "1GB"}}, "need a device_map"),
    ],
)
def test_bad_placements_are_clear_errors(kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        lp.load_model(NAME, device="cpu", **kwargs)


def test_evaluation_scores_every_question_as_on_the_whole_model(whole, offloaded):
    """The LM head on disk, applied only where a continuation is scored: the same per-question scores."""
    model, tokenizer = whole
    split, reference = (
        lp.evaluation.evaluate(m, tokenizer, ["arc_easy"], limit=3, cache=False, progress=False)
        for m in (offloaded, model)
    )
    assert split.questions == reference.questions
    for key, probability in reference.probabilities["arc_easy"].items():
        assert split.probabilities["arc_easy"][key] == pytest.approx(probability, abs=1e-5)
