import json
import math

import pytest
import torch

from layerprune import loss
from layerprune.errors import InvalidInputError
from layerprune.head import split_head
from layerprune.loss import heldout_loss
from layerprune.tiny import TINY_FAMILIES, tiny_model


def test_heldout_loss_matches_a_float64_recomputation():
    model = tiny_model("llama", num_layers=2)
    blocks = torch.randint(0, 256, (5, 12), generator=torch.Generator().manual_seed(0))
    result = heldout_loss(model, blocks, batch_size=2, progress=False)
    with torch.no_grad():
        logits = model(blocks).logits.double()
    reference = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), blocks[:, 1:].reshape(-1)
    )
    assert result.tokens == 5 * 11 and result.vocab_size == 259
    assert result.loss == pytest.approx(reference.item(), rel=1e-5)
    assert result.normalized == pytest.approx(result.loss / math.log(259))
    assert result.perplexity == pytest.approx(math.exp(result.loss))


def test_heldout_loss_rejects_bad_blocks():
    model = tiny_model("llama", num_layers=2)
    with pytest.raises(InvalidInputError):
        heldout_loss(model, torch.zeros(0, 8, dtype=torch.long))
    with pytest.raises(InvalidInputError):
        heldout_loss(model, torch.zeros(3, 8, dtype=torch.long), batch_size=0)


def _one_pass(model, ids):
    """The summed loss of the model's own forward over all positions at once (the reference)."""
    logits = model(input_ids=ids, use_cache=False).logits[:, :-1].float()
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="sum"
    )


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_the_head_in_slices_gives_the_one_pass_loss_bit_for_bit_and_its_gradients(family, monkeypatch):
    monkeypatch.setattr(loss, "HEAD_SLICE_BYTES", 4 * 259 * 7)  # 7 positions per slice: 5 slices and a remainder
    model = tiny_model(family, num_layers=2)
    assert split_head(model) is not None  # the sliced path, not the fallback
    ids = torch.randint(0, 256, (3, 14), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loss.next_token_loss_sum(model, ids), _one_pass(model, ids))
    grads = []
    for compute in (
        lambda: loss.next_token_loss_sum(model, ids, backward_scale=1 / 39),
        lambda: (_one_pass(model, ids) / 39).backward(),
    ):
        model.zero_grad()
        compute()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 0
    assert all(torch.allclose(grads[0][k], grads[1][k], rtol=1e-5, atol=1e-7) for k in grads[0])


def test_heldout_loss_keeps_each_blocks_mean_loss():
    model = tiny_model("qwen2", num_layers=2)
    blocks = torch.randint(0, 256, (5, 12), generator=torch.Generator().manual_seed(1))
    result = heldout_loss(model, blocks, batch_size=2, progress=False)
    alone = [heldout_loss(model, block[None], progress=False).loss for block in blocks]
    assert result.block_losses == pytest.approx(alone, rel=1e-6)
    assert sum(result.block_losses) / 5 == pytest.approx(result.loss, rel=1e-6)  # equal tokens per block
    assert "block_losses" not in result.as_dict(blocks=False)
    assert loss.HeldoutLoss(**json.loads(json.dumps(result.as_dict()))) == result  # its list read back: a tuple
