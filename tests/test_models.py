import math
from pathlib import Path

import pytest
import torch

from layerprune import load_model
from layerprune.errors import InvalidInputError, ModelLoadError, UnsupportedArchitectureError
from layerprune.models import resolve_source
from layerprune.tiny import byte_tokenizer, tiny_model


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-llama")
    tiny_model("llama", num_layers=4, hidden=64).save_pretrained(path)
    byte_tokenizer().save_pretrained(path)
    return path


def test_local_directory_loads_in_float32_eval_mode(saved_tiny):
    model, tokenizer = load_model(saved_tiny, device="cpu", dtype="float32")
    assert model.dtype == torch.float32 and not model.training
    assert tokenizer.pad_token is not None
    reference = tiny_model("llama", num_layers=4, hidden=64)
    ids = torch.randint(0, 250, (1, 9))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, reference(ids).logits)


@pytest.mark.parametrize(("quantization", "layer"), [("4bit", "Linear4bit"), ("8bit", "Linear8bitLt")])
def test_bitsandbytes_quantization_on_cpu(saved_tiny, quantization, layer):
    model, _ = load_model(saved_tiny, device="cpu", quantization=quantization)
    assert type(model.model.layers[0].mlp.up_proj).__name__ == layer
    with torch.no_grad():
        logits = model(torch.randint(0, 250, (1, 5))).logits
    assert torch.isfinite(logits).all()


def test_missing_tokenizer_pad_gets_eos(saved_tiny, tmp_path):
    tokenizer = byte_tokenizer()
    tokenizer.pad_token = None
    model_dir = tmp_path / "nopad"
    tiny_model("llama", num_layers=2).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    _, loaded = load_model(model_dir, device="cpu")
    assert loaded.pad_token == loaded.eos_token


def test_bad_names_paths_and_options_are_clear_errors(saved_tiny, tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # answer at once, not after retries
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(tmp_path / "missing")
    with pytest.raises(ModelLoadError, match=r"no config\.json"):
        load_model(tmp_path)
    with pytest.raises(ModelLoadError, match="not an embedded model"):
        load_model("no-such-org/no-such-model-xyz")
    with pytest.raises(InvalidInputError, match="quantization"):
        load_model(saved_tiny, quantization="3bit")
    with pytest.raises(InvalidInputError, match="dtype"):
        load_model(saved_tiny, dtype="int8")


def test_unsupported_architecture_is_refused_before_loading(tmp_path):
    from transformers import MambaConfig

    MambaConfig(num_hidden_layers=2, hidden_size=16, vocab_size=300).save_pretrained(tmp_path)
    with pytest.raises(UnsupportedArchitectureError, match="'mamba'"):
        load_model(tmp_path)


@pytest.mark.integration
def test_default_model_is_sane_on_heldout_text():
    from layerprune.data import corpus_blocks

    model, tokenizer = load_model("smollm2-135m", device="cpu")
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 30
    blocks = corpus_blocks(tokenizer, block_size=128, max_blocks={"heldout": 8})["heldout"]
    with torch.no_grad():
        loss = model(input_ids=blocks, labels=blocks).loss.item()
    assert 5 < math.exp(loss) < 100


QWEN = "qwen2.5-coder-1.5b"


def _converted(name: str) -> bool:
    from layerprune.cache import cache_root, is_complete

    return is_complete(cache_root() / "models" / name)


@pytest.mark.integration
@pytest.mark.skipif(not _converted(QWEN), reason=f"{QWEN} is fetched on first use only (1.1 GB); not in the cache")
def test_qwen_coder_loads_as_28_layers_with_an_untied_head():
    model, tokenizer = load_model(QWEN, device="cpu", dtype="bfloat16")
    config = model.config
    assert (config.model_type, config.num_hidden_layers, config.hidden_size) == ("qwen2", 28, 1536)
    assert not config.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(1.78e9, rel=0.01)
    ids = tokenizer("def fibonacci(n):", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.isfinite(model(ids).logits).all()
    notice = (Path(resolve_source(QWEN)) / "NOTICE").read_text()
    assert "Apache License" in notice and "Qwen" in notice
