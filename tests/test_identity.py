import torch

from layerprune.cache import model_identity
from layerprune.tiny import tiny_model


def test_identity_is_stable_and_sensitive_to_weights_and_config():
    base = model_identity(tiny_model(seed=0))
    assert base == model_identity(tiny_model(seed=0))
    assert base != model_identity(tiny_model(seed=1))
    changed = tiny_model(seed=0)
    with torch.no_grad():
        changed.lm_head.weight[0, 0] += 1e-6
    assert model_identity(changed) != base
    renamed = tiny_model(seed=0)
    renamed.config.layerprune = {"removed_layers": [1]}
    assert model_identity(renamed) != base
