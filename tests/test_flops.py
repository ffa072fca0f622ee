"""The FLOP counter: every linear layer's products counted once per forward pass, and the backward it implies."""

import os
import subprocess
import sys

import pytest
import torch

from layerprune.speed import flops, utilization
from layerprune.tiny import tiny_model


def _counted(run) -> flops.LinearFlops:
    counter = flops.LinearFlops()
    handle = torch.nn.modules.module.register_module_forward_hook(counter)
    try:
        run()
    finally:
        handle.remove()
    return counter


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_a_forward_pass_counts_two_flops_per_weight_per_token(family):
    model = tiny_model(family, num_layers=3)
    ids = torch.randint(0, 100, (2, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        counter = _counted(lambda: model(input_ids=ids, use_cache=False))
    attention = 2 * 3 * model.config.hidden_size * 10  # utilization's causal attention term, not counted here
    expected = ids.numel() * (utilization.flops_per_token(model, 10) - attention)
    assert (counter.forward, counter.backward) == (pytest.approx(expected), 0)


def test_the_backward_counts_the_input_gradient_and_a_trained_weight():
    frozen, trained = torch.nn.Linear(8, 4), torch.nn.Linear(4, 2)
    frozen.weight.requires_grad_(False)
    x = torch.randn(5, 8, requires_grad=True)
    counter = _counted(lambda: trained(frozen(x)).sum().backward())
    assert counter.forward == 2 * 5 * (8 * 4 + 4 * 2)
    assert counter.backward == 2 * 5 * 8 * 4 + 2 * (2 * 5 * 4 * 2)  # frozen: input only; trained: input and weight


def test_a_layer_recomputed_in_the_backward_pass_is_counted_once():
    model = tiny_model("llama", num_layers=3)  # every weight trains: the backward runs through every layer
    ids = torch.randint(0, 100, (2, 10), generator=torch.Generator().manual_seed(0))
    plain = _counted(lambda: model(input_ids=ids, use_cache=False).logits.sum().backward())
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})  # as healing
    model.train()
    recomputed = _counted(lambda: model(input_ids=ids, use_cache=False).logits.sum().backward())
    assert plain.backward > 0 and (recomputed.forward, recomputed.backward) == (plain.forward, plain.backward)


def test_a_process_asked_to_count_writes_its_total(tmp_path):
    log = tmp_path / "counts"
    log.mkdir()
    script = (
        "import torch, layerprune\n"
        "from layerprune.tiny import tiny_model\n"
        "model = tiny_model('llama', num_layers=2)\n"
        "with torch.no_grad(): model(input_ids=torch.zeros(1, 4, dtype=torch.long), use_cache=False)\n"
    )
    env = os.environ | {flops.FLOP_LOG: str(log)}
    for _ in range(2):  # two processes counting into one folder: their totals add up
        subprocess.run([sys.executable, "-c", script], env=env, check=True, capture_output=True)
    model = tiny_model("llama", num_layers=2)
    expected = 4 * (utilization.flops_per_token(model, 4) - 2 * 2 * model.config.hidden_size * 4)
    assert len(list(log.glob("*.json"))) == 2 and flops.read_flops(log) == pytest.approx(2 * expected)
    assert flops.read_flops(tmp_path / "absent") == 0
