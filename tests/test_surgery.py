import pytest
import torch
from transformers import AutoModelForCausalLM

from layerprune.adapters import get_adapter
from layerprune.errors import InvalidInputError
from layerprune.surgery import prune, shared_copy
from layerprune.tiny import PAD_ID, TINY_FAMILIES, byte_tokenizer, tiny_config, tiny_model

LAYERS = 6
REMOVED = [1, 3]


def _ids(rows: int = 2, width: int = 20) -> torch.Tensor:
    return torch.randint(0, 256, (rows, width), generator=torch.Generator().manual_seed(0))


def _skipping(model, layers):
    """Forward hooks that make the given decoder layers return their input (the reference for pruning)."""

    def identity(module, args, kwargs, output):
        hidden = args[0] if args else kwargs["hidden_states"]
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    decoder = get_adapter(model).decoder_layers(model)
    return [decoder[i].register_forward_hook(identity, with_kwargs=True) for i in layers]


def _logits(model, ids: torch.Tensor, skip=()) -> torch.Tensor:
    handles = _skipping(model, skip)
    try:
        with torch.no_grad():
            return model(ids, use_cache=False).logits
    finally:
        for handle in handles:
            handle.remove()


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_pruned_model_equals_the_original_with_layers_skipped(family):
    model = tiny_model(family, num_layers=LAYERS)
    before = _logits(model, _ids())
    pruned = prune(model, REMOVED, strategy="similarity")
    assert type(pruned) is type(model)
    torch.testing.assert_close(_logits(pruned, _ids()), _logits(model, _ids(), REMOVED), atol=1e-5, rtol=0)
    torch.testing.assert_close(_logits(model, _ids()), before, atol=0, rtol=0)
    layers = get_adapter(pruned).decoder_layers(pruned)
    assert len(layers) == pruned.config.num_hidden_layers == LAYERS - 2
    assert len(get_adapter(model).decoder_layers(model)) == model.config.num_hidden_layers == LAYERS
    indices = [[m.layer_idx for m in layer.modules() if hasattr(m, "layer_idx")] for layer in layers]
    assert all(set(found) == {i} for i, found in enumerate(indices))


def snapshot(model) -> dict:
    """Everything of a model that pruning a copy of it must leave as it was, bit for bit."""
    params = dict(model.named_parameters(remove_duplicate=False))
    return {
        "logits": _logits(model, _ids()),
        "config": model.config.to_dict(),
        "state": {name: tensor.detach().clone() for name, tensor in model.state_dict().items()},
        "dtypes": {name: tensor.dtype for name, tensor in model.state_dict().items()},
        "requires_grad": {name: param.requires_grad for name, param in params.items()},
        "parameters": {name: id(param) for name, param in params.items()},
        "modules": [(name, type(module).__name__, module.training) for name, module in model.named_modules()],
        "layer_attributes": [
            {key: value for key, value in vars(module).items() if not key.startswith("_")}
            for layer in get_adapter(model).decoder_layers(model)
            for module in layer.modules()
        ],
        "own_forward": [name for name, module in model.named_modules() if "forward" in vars(module)],
    }


def assert_unchanged(model, before: dict) -> None:
    after = snapshot(model)
    torch.testing.assert_close(after.pop("logits"), before["logits"], atol=0, rtol=0)
    for name, tensor in after.pop("state").items():
        assert torch.equal(tensor, before["state"][name]), name
    assert after == {key: value for key, value in before.items() if key not in ("logits", "state")}


def storage_bytes(*models) -> int:
    """The bytes of the distinct storages holding the models' parameters and buffers."""
    storages = {}
    for model in models:
        for tensor in [*model.parameters(), *model.buffers()]:
            storage = tensor.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


def source_name(name: str, path: str, keep: list[int]) -> str:
    """The name in the unpruned model of a pruned model's tensor (its layer index translated back)."""
    prefix = f"{path}."
    if not name.startswith(prefix):
        return name
    index, rest = name[len(prefix) :].split(".", 1)
    return f"{prefix}{keep[int(index)]}.{rest}"


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_a_pruned_copy_shares_the_tensors_it_keeps_and_leaves_its_source_as_it_was(family):
    model = tiny_model(family, num_layers=LAYERS)
    get_adapter(model).norm(model).requires_grad_(False)  # a frozen part: the copy keeps each flag as it is
    before = snapshot(model)
    pruned = prune(model, REMOVED)
    assert_unchanged(model, before)
    keep = [i for i in range(LAYERS) if i not in REMOVED]
    path = get_adapter(model).layers
    source = model.state_dict()
    for name, tensor in pruned.state_dict().items():
        assert tensor.data_ptr() == source[source_name(name, path, keep)].data_ptr(), name
    source_params = dict(model.named_parameters())
    for name, param in pruned.named_parameters():
        original = source_params[source_name(name, path, keep)]
        assert param is not original and param.requires_grad == original.requires_grad, name
    if model.config.tie_word_embeddings:
        assert pruned.get_output_embeddings().weight is pruned.get_input_embeddings().weight
    assert storage_bytes(model, pruned) == storage_bytes(model)  # the copy adds no tensor storage at all
    pruned.requires_grad_(False).train()  # what healing does to its copy...
    pruned.to(torch.float64)  # ... and moving or casting it: only the copy's parameters are rebound
    assert all(p.dtype == torch.float64 for p in pruned.parameters())
    get_adapter(pruned).decoder_layers(pruned)[0].mlp = torch.nn.Identity()
    assert_unchanged(model, before)
    torch.testing.assert_close(
        _logits(prune(model, REMOVED), _ids()), _logits(model, _ids(), REMOVED), atol=1e-5, rtol=0
    )


def test_shared_copies_are_independent_of_each_other():
    model = tiny_model("llama", num_layers=LAYERS)
    before = snapshot(model)
    first, second = shared_copy(model), shared_copy(model)
    first.model.layers[0].self_attn.layer_idx = 7
    first.config.num_hidden_layers = 2
    first.requires_grad_(False)
    assert second.model.layers[0].self_attn.layer_idx == 0 and second.config.num_hidden_layers == LAYERS
    assert all(p.requires_grad for p in second.parameters())
    assert_unchanged(model, before)


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_generation_with_the_kv_cache_equals_generation_without(family):
    pruned = prune(tiny_model(family, num_layers=LAYERS), REMOVED)
    prompt = _ids(2, 20)
    with torch.no_grad():
        runs = [
            pruned.generate(prompt, max_new_tokens=12, do_sample=False, use_cache=cache, pad_token_id=PAD_ID)
            for cache in (True, False)
        ]
    assert runs[0].shape == (2, 32)
    torch.testing.assert_close(runs[0], runs[1], atol=0, rtol=0)


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_save_and_reload_gives_the_same_model(family, tmp_path):
    pruned = prune(tiny_model(family, num_layers=LAYERS), REMOVED, strategy="last")
    pruned.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(reloaded) is type(pruned)
    torch.testing.assert_close(_logits(reloaded, _ids()), _logits(pruned, _ids()), atol=0, rtol=0)
    assert reloaded.config.layerprune == {
        "original_num_layers": LAYERS,
        "removed_layers": REMOVED,
        "strategy": "last",
        "steps": [
            {
                "removed_layers": REMOVED,
                "removed_original_layers": REMOVED,
                "num_layers_before": LAYERS,
                "num_layers_after": LAYERS - 2,
                "strategy": "last",
            }
        ],
    }


def test_gemma3_layer_types_keep_the_pattern_of_the_kept_layers():
    model = tiny_model("gemma3_text", num_layers=LAYERS)
    assert model.config.layer_types == ["sliding_attention", "sliding_attention", "full_attention"] * 2
    pruned = prune(model, [2, 3])
    assert pruned.config.layer_types == [
        "sliding_attention",
        "sliding_attention",
        "sliding_attention",
        "full_attention",
    ]
    assert [layer.self_attn.is_sliding for layer in pruned.model.layers] == [True, True, True, False]


def test_qwen2_sliding_layers_and_their_boundary_move_with_the_cut():
    model = tiny_model("qwen2", num_layers=LAYERS)
    assert model.config.max_window_layers == 3
    pruned = prune(model, [0, 4])
    assert pruned.config.layer_types == ["full_attention", "full_attention", "sliding_attention", "sliding_attention"]
    assert pruned.config.max_window_layers == 2
    qwen3 = prune(tiny_model("qwen3", num_layers=LAYERS), [0])
    assert qwen3.config.max_window_layers == 28 and len(qwen3.config.layer_types) == LAYERS - 1


def test_pruning_twice_composes(tmp_path):
    model = tiny_model("llama", num_layers=LAYERS)
    once = prune(model, [1, 3], strategy="similarity")
    twice = prune(prune(model, [1], strategy="a"), [2], strategy="b")
    torch.testing.assert_close(_logits(twice, _ids()), _logits(once, _ids()), atol=0, rtol=0)
    record = twice.config.layerprune
    assert record["original_num_layers"] == LAYERS and record["removed_layers"] == [1, 3]
    assert record["strategy"] == "b"
    assert [s["removed_original_layers"] for s in record["steps"]] == [[1], [3]]
    assert [s["removed_layers"] for s in record["steps"]] == [[1], [2]]
    twice.save_pretrained(tmp_path)
    third = prune(AutoModelForCausalLM.from_pretrained(tmp_path), [0, 3])
    assert third.config.layerprune["removed_layers"] == [0, 1, 3, 5]


def test_inplace_prunes_the_model_itself():
    model = tiny_model("gpt2", num_layers=LAYERS)
    assert prune(model, [5], inplace=True) is model
    assert len(model.transformer.h) == model.config.n_layer == LAYERS - 1


def test_gpt2_scaling_by_inverse_layer_index_survives_renumbering(tmp_path):
    config = tiny_config("gpt2", num_layers=4)
    config.scale_attn_by_inverse_layer_idx = True
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    before = snapshot(model)
    pruned = prune(model, [0, 2])
    assert_unchanged(model, before)  # the folded query weights are new tensors, not the shared ones scaled
    assert pruned.transformer.h[0].attn.c_attn.weight.data_ptr() != model.transformer.h[1].attn.c_attn.weight.data_ptr()
    assert pruned.transformer.h[0].mlp.c_fc.weight.data_ptr() == model.transformer.h[1].mlp.c_fc.weight.data_ptr()
    torch.testing.assert_close(_logits(pruned, _ids()), _logits(model, _ids(), [0, 2]), atol=1e-5, rtol=0)
    pruned.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(_logits(reloaded, _ids()), _logits(pruned, _ids()), atol=1e-5, rtol=0)


@pytest.mark.parametrize("quantization", ["4bit", "8bit"])
def test_bitsandbytes_models_can_be_pruned(quantization, tmp_path):
    from layerprune import load_model

    source = tmp_path / "source"
    tiny_model("llama", num_layers=4, hidden=64).save_pretrained(source)
    byte_tokenizer().save_pretrained(source)
    model, _ = load_model(source, device="cpu", quantization=quantization)
    before = _logits(model, _ids())
    pruned = prune(model, [1])
    torch.testing.assert_close(_logits(pruned, _ids()), _logits(model, _ids(), [1]), atol=1e-5, rtol=0)
    kept, original = pruned.model.layers[1].mlp.up_proj.weight, model.model.layers[2].mlp.up_proj.weight
    assert kept.data_ptr() == original.data_ptr() and kept is not original  # quantized data shared, not copied
    torch.testing.assert_close(_logits(model, _ids()), before, atol=0, rtol=0)
    pruned.save_pretrained(tmp_path / "pruned")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "pruned", device_map={"": "cpu"})
    assert type(reloaded.model.layers[0].mlp.up_proj) is type(model.model.layers[0].mlp.up_proj)
    assert reloaded.config.layerprune["removed_layers"] == [1]
    torch.testing.assert_close(_logits(reloaded, _ids()), _logits(pruned, _ids()), atol=1e-2, rtol=0)


def test_peft_models_are_refused():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_model("llama", num_layers=3), LoraConfig(r=2, target_modules=["q_proj"]))
    with pytest.raises(InvalidInputError, match="prune the base model before healing"):
        prune(model, [1])


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        ([], "empty"),
        ([1, 1], "repeat"),
        ([6], r"0\.\.5"),
        ([-1], r"0\.\.5"),
        ([1.0], "integers"),
        ([True], "integers"),
        ("12", "list of layer indices"),
        (range(6), "all 6 layers"),
    ],
)
def test_bad_layers_are_refused_and_leave_the_model_untouched(layers, message):
    model = tiny_model("llama", num_layers=LAYERS)
    before = _logits(model, _ids())
    with pytest.raises(InvalidInputError, match=message):
        prune(model, layers, inplace=True)
    assert len(model.model.layers) == model.config.num_hidden_layers == LAYERS
    assert not hasattr(model.config, "layerprune")
    torch.testing.assert_close(_logits(model, _ids()), before, atol=0, rtol=0)


def test_an_inconsistent_per_layer_config_is_refused_before_any_change():
    model = tiny_model("llama", num_layers=LAYERS)
    model.config.layer_types = ["full_attention"] * (LAYERS - 1)
    with pytest.raises(InvalidInputError, match="layer_types has 5 entries for 6 layers"):
        prune(model, [1], inplace=True)
    assert len(model.model.layers) == model.config.num_hidden_layers == LAYERS
