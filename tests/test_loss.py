import math

import pytest
import torch

from layerprune.errors import InvalidInputError
from layerprune.loss import heldout_loss
from layerprune.tiny import tiny_model


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
