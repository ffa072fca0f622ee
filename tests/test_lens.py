import pytest
import torch

from layerprune.lens import logit_lens
from layerprune.loss import heldout_loss
from layerprune.tiny import TINY_FAMILIES, tiny_model


@pytest.mark.parametrize("family", ["llama", "gemma3_text", "gpt2"])
def test_the_last_position_reproduces_the_model(family):
    model = tiny_model(family, num_layers=3)
    blocks = torch.randint(0, 256, (3, 10), generator=torch.Generator().manual_seed(0))
    lens = logit_lens(model, blocks, batch_size=2, progress=False)
    assert len(lens.agreement) == 4 and lens.tokens == 27
    assert lens.agreement[-1] == 1.0
    assert lens.loss[-1] == pytest.approx(heldout_loss(model, blocks, progress=False).loss, rel=1e-5)
    assert lens.to_final_prenorm[-1] == pytest.approx(0.0, abs=1e-7)
    assert all(0 <= d <= 1 for d in lens.to_final_prenorm + lens.to_final_postnorm)


def test_prenorm_and_postnorm_finals_differ_when_the_norm_has_weights():
    model = tiny_model("llama", num_layers=2)
    with torch.no_grad():
        model.model.norm.weight.copy_(torch.linspace(0.1, 3.0, model.config.hidden_size))
    lens = logit_lens(model, torch.randint(0, 256, (2, 6)), progress=False)
    assert lens.to_final_postnorm[-1] > 0.01
    assert len(TINY_FAMILIES) == 8
