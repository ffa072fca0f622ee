import pytest
import torch

from layerprune.adapters import ADAPTERS, adapter_for_model_type, get_adapter, supported_model_types
from layerprune.errors import UnsupportedArchitectureError
from layerprune.tiny import TINY_FAMILIES, tiny_model


def test_every_adapter_has_a_tiny_family():
    assert set(supported_model_types()) == set(TINY_FAMILIES)
    assert {"Llama", "Mistral", "Qwen2", "Qwen3", "Gemma3", "Phi-3", "GPT-2", "GPT-NeoX"} <= {
        a.family for a in ADAPTERS
    }


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_adapter_finds_layers_norm_and_ffn(family):
    model = tiny_model(family, num_layers=5)
    adapter = get_adapter(model)
    layers = adapter.decoder_layers(model)
    assert isinstance(layers, torch.nn.ModuleList) and len(layers) == 5
    norm = adapter.norm(model)
    assert isinstance(norm, torch.nn.Module) and not isinstance(norm, torch.nn.ModuleList)
    names = [name for name, _ in model.named_modules()]
    for suffix in adapter.ffn:
        matches = [n for n in names if n.endswith(suffix)]
        assert len(matches) == 5, (suffix, matches)
    for field in adapter.layer_fields:
        value = getattr(model.config, field, None)
        assert value is None or len(value) == 5


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_norm_is_the_module_applied_after_the_last_layer(family):
    """Feeding the last layer's output through the adapter's norm and the head reproduces the logits."""
    model = tiny_model(family, num_layers=3)
    adapter = get_adapter(model)
    captured = {}
    handle = adapter.decoder_layers(model)[-1].register_forward_hook(
        lambda m, i, o: captured.setdefault("x", o[0] if isinstance(o, tuple) else o)
    )
    ids = torch.randint(0, 250, (2, 7))
    with torch.no_grad():
        logits = model(ids).logits
        rebuilt = model.get_output_embeddings()(adapter.norm(model)(captured["x"]))
    handle.remove()
    if getattr(model.config, "final_logit_softcapping", None):
        cap = model.config.final_logit_softcapping
        rebuilt = torch.tanh(rebuilt / cap) * cap
    torch.testing.assert_close(logits, rebuilt)


def test_unknown_architecture_names_the_supported_ones():
    with pytest.raises(UnsupportedArchitectureError) as info:
        adapter_for_model_type("mamba")
    message = str(info.value)
    assert "'mamba'" in message and "llama" in message and "ADAPTERS" in message
