"""The graded exercises: for each, the function a student writes and a grader that compares it with layerprune's
own implementation on tiny random models (seconds on a CPU).

A grader raises `Failure` with a message naming the input, what was expected, what came back, and a hint.
"""

from __future__ import annotations

import math
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..adapters import get_adapter
from ..adapters import num_layers as count_layers
from ..loss import heldout_loss
from ..selection import layers_for_fraction, profile_free_block, select_block
from ..similarity import DistanceProfile, pair_distance, profile_distances
from ..surgery import prune
from ..tiny import byte_tokenizer, tiny_model

LAYERS = 6
TEXT = "The Union is strong, and the state of our economy is sound. We the people remain resilient."


class Failure(Exception):
    """A graded function gave a wrong answer, or failed to give one."""


@dataclass(frozen=True)
class Exercise:
    """One graded function: where it is asked (chapter notebook), its title there, its signature, its grader."""

    chapter: str
    title: str
    name: str
    signature: str
    grade: Callable[[Callable[..., Any]], None]


def _mismatch(case: str, expected: Any, got: Any, hint: str) -> Failure:
    return Failure(f"on {case}:\n  expected {_show(expected)}\n  got      {_show(got)}\n  hint: {hint}")


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.10g}"
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}" if value.numel() > 8 else repr(value.tolist())
    return repr(value)


def _call(function: Callable[..., Any], case: str, *args: Any) -> Any:
    """Call the student's function; a stub or an exception becomes a Failure saying where it happened."""
    try:
        return function(*args)
    except NotImplementedError:
        raise Failure(f"on {case}: still the TODO stub (NotImplementedError); write the function's body") from None
    except Exception as error:
        frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename.startswith("<")]
        where = f" at line {frames[-1].lineno} of the exercise cell" if frames else ""
        hint = ""
        if isinstance(error, NameError):
            hint = "\n  hint: the checker runs only the exercise cells: define helpers and imports in the same cell"
        elif "math domain error" in str(error):
            hint = "\n  hint: an argument just outside the domain, e.g. a cosine rounded past ±1: clamp it"
        raise Failure(f"on {case}: raised {type(error).__name__}{where}: {error}{hint}") from None


def _as_float(value: Any, case: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError, RuntimeError):
        raise Failure(f"on {case}: expected a number, got {type(value).__name__} {_show(value)}") from None


def _as_int_list(value: Any, case: str) -> list[int]:
    try:
        items = list(value)
    except TypeError:
        raise Failure(f"on {case}: expected a list of layer indices, got {type(value).__name__}") from None
    if not all(isinstance(i, int | np.integer) and not isinstance(i, bool) for i in items):
        raise Failure(f"on {case}: expected a list of int layer indices, got {items!r}")
    return [int(i) for i in items]


def _ids(batch: int = 2, length: int = 16) -> torch.Tensor:
    """Byte-tokenizer ids of `batch` different stretches of TEXT, [batch, length]."""
    ids = byte_tokenizer()(TEXT)["input_ids"]
    return torch.tensor([ids[i * length : (i + 1) * length] for i in range(batch)])


def _model(family: str = "llama") -> nn.Module:
    """A tiny random model whose final norm has random weights, so that it turns the stream as trained ones do."""
    model = tiny_model(family, num_layers=LAYERS, hidden=32, seed=0)
    weight = get_adapter(model).norm(model).weight
    with torch.no_grad():
        weight.copy_(torch.rand(weight.shape, generator=torch.Generator().manual_seed(1)) + 0.5)
    return model


def _unit(x: torch.Tensor) -> torch.Tensor:
    return nn.functional.normalize(x.double(), dim=-1)


# 1. Similarity -------------------------------------------------------------------------------------------------


def grade_angular_distance(angular_distance: Callable[..., Any]) -> None:
    """Against `pair_distance` of the unit vectors: random, parallel, opposite and nearly parallel pairs."""
    generator = torch.Generator().manual_seed(0)
    a, b, direction = torch.randn(3, 64, dtype=torch.float64, generator=generator)
    nearby = a + 1e-7 * a.norm() * _unit(direction)
    unit_hint = "normalise a and b to unit length first: the angle does not depend on their lengths"
    accuracy_hint = (
        "arccos of a cosine near 1 loses most digits (cos θ ≈ 1 − θ²/2 rounds); use θ = 2·atan2(|u − v|, |u + v|) "
        "on the unit vectors u = a/|a|, v = b/|b| (as layerprune.similarity.pair_distance does)"
    )
    cases = [
        ("two random float64 vectors of length 64", a, b, 1e-9, "d = arccos(a·b / (|a| |b|)) / π, in [0, 1]"),
        ("a vector and 3 times itself", a, 3 * a, 1e-9, unit_hint),
        ("a vector and -2 times itself", a, -2 * a, 1e-9, "opposite vectors are at distance 1 (θ = π)"),
        ("two random float32 vectors", a.float(), b.float(), 1e-6, "compute in float64 (a.double())"),
        ("two nearly parallel vectors (angle 1e-7 rad)", a, nearby, 1e-6, accuracy_hint),
    ]
    for case, x, y, tolerance, hint in cases:
        expected = pair_distance(_unit(x), _unit(y)).item()
        got = _as_float(_call(angular_distance, case, x.clone(), y.clone()), case)
        if math.isnan(got):
            hint = "NaN: the cosine rounded just past ±1, where arccos is undefined; clamping it is not enough: " + (
                accuracy_hint
            )
        if not math.isclose(got, expected, rel_tol=tolerance, abs_tol=1e-12):
            raise _mismatch(case, expected, got, hint)


def grade_residual_stream(residual_stream: Callable[..., Any]) -> None:
    """The shape, no hook left behind, and every D[n, l] against `profile_distances` (token "all")."""
    model, ids = _model(), _ids()
    case = f"a tiny Llama ({LAYERS} layers, hidden size 32) and input_ids of shape {tuple(ids.shape)}"
    with torch.no_grad():
        final = model(input_ids=ids, use_cache=False, output_hidden_states=True).hidden_states[-1]
    last = get_adapter(model).decoder_layers(model)[-1]
    hooks = len(last._forward_hooks)  # after transformers has installed its own hook for output_hidden_states
    got = _call(residual_stream, case, model, ids.clone())
    if len(last._forward_hooks) != hooks:
        raise Failure(f"on {case}: a forward hook was left on the model; call handle.remove() (in a finally block)")
    shape = (LAYERS + 1, *ids.shape, model.config.hidden_size)
    if not isinstance(got, torch.Tensor) or tuple(got.shape) != shape:
        raise _mismatch(
            case,
            f"a tensor of shape {shape}",
            got,
            "stack L+1 states [B, T, d]: the inputs of the L decoder layers, then the last layer's output",
        )
    reference = profile_distances(model, ids, token="all", progress=False)
    for n in range(1, LAYERS + 1):
        mine = pair_distance(_unit(got[:-n]), _unit(got[n:])).mean(-1).mean(-1).numpy()
        wrong = np.flatnonzero(~np.isclose(mine, reference.curve(n), rtol=1e-5, atol=1e-6))
        if wrong.size:
            start = int(wrong[0])
            hint = "x^(l) is the input of decoder layer l: hidden_states[l] of output_hidden_states, for l < L"
            if start + n == LAYERS and torch.allclose(got[-1], final):
                hint = (
                    "x^(L) is the state AFTER the final norm (the last entry of output_hidden_states); take the "
                    "output of the last decoder layer with a forward hook instead"
                )
            raise _mismatch(
                f"{case}, D[{n}, {start}] (token-averaged distance from x^({start}) to x^({start + n}))",
                float(reference.curve(n)[start]),
                float(mine[start]),
                hint,
            )


# 2. Selection --------------------------------------------------------------------------------------------------


def _profiles() -> list[tuple[str, DistanceProfile]]:
    """A real profile of a tiny model and two made-up ones (minimum at the last start; tied minima)."""
    model = _model()
    real = profile_distances(model, _ids(4, 16), progress=False)
    made_up = []
    for name, row, values in [
        ("a made-up profile whose D[2, l] is smallest at the last valid start l = L-2", 2, [5, 4, 3, 2, 1]),
        ("a made-up profile with tied minima in D[1, l] and D[3, l]", 1, [2, 1, 3, 1, 4, 5]),
    ]:
        mean = real.mean.copy()
        mean[row, : len(values)] = np.asarray(values) / 10
        if row == 1:
            mean[3, :4] = [0.4, 0.2, 0.2, 0.3]
        made_up.append((name, _replace(real, mean)))
    return [(f"the profile of a tiny Llama ({LAYERS} layers)", real), *made_up]


def _replace(profile: DistanceProfile, mean: np.ndarray) -> DistanceProfile:
    return DistanceProfile(
        mean,
        profile.std,
        profile.num_sequences,
        profile.num_layers,
        "made-up",
        "made-up",
        profile.token,
        profile.metric,
    )


def grade_optimal_start(optimal_start: Callable[..., Any]) -> None:
    """Against `select_block(profile, n).start` for every n, on a real and two made-up profiles."""
    for name, profile in _profiles():
        for n in range(1, profile.num_layers):
            case = f"profile.mean of {name}, n = {n}"
            expected = select_block(profile, n).start
            got = _call(optimal_start, case, profile.mean.copy(), n)
            if isinstance(got, bool) or not isinstance(got, int | np.integer) or got != expected:
                curve = profile.curve(n)
                if isinstance(got, int | np.integer) and got > profile.num_layers - n:
                    hint = (
                        f"a block of {n} starting at {got} runs past the last layer: row n of profile.mean is NaN "
                        "beyond l = L-n; use mean[n, :L-n+1] (np.argmin returns the position of the first NaN)"
                    )
                elif expected == profile.num_layers - n:
                    hint = "l runs over 0..L-n inclusive: that is L-n+1 starts"
                elif np.count_nonzero(curve == curve.min()) > 1:
                    hint = "ties go to the shallowest block (np.argmin returns the first minimum)"
                else:
                    hint = "l*(n) = argmin over l of D[n, l] = mean[n, l]; return it as an int"
                raise _mismatch(case, expected, got, hint)


def grade_last_block(last_block: Callable[..., Any]) -> None:
    """Against the "last" strategy's layers for every n, on 6 and 30 layers."""
    for num_layers in (6, 30):
        for n in range(1, num_layers):
            case = f"num_layers = {num_layers}, n = {n}"
            expected = list(profile_free_block(num_layers, n, "last").layers)
            got = _as_int_list(_call(last_block, case, num_layers, n), case)
            if got != expected:
                hint = "the n layers just before the final one, in increasing order"
                if num_layers - 1 in got:
                    hint = f"the final layer ({num_layers - 1}) is always kept; remove the n layers before it"
                raise _mismatch(case, expected, got, hint)


# 3. Healing ----------------------------------------------------------------------------------------------------


def grade_skip_layers_logits(skip_layers_logits: Callable[..., Any]) -> None:
    """Against the logits of `prune(model, layers)`; the model must come back unchanged."""
    for family, layers in [("llama", [2, 3]), ("llama", [0]), ("llama", [4]), ("gemma3_text", [1, 2, 3])]:
        model, ids = _model(family), _ids()
        case = f"a tiny {family} ({LAYERS} layers), input_ids of shape {tuple(ids.shape)}, layers = {layers}"
        with torch.no_grad():
            before = model(input_ids=ids, use_cache=False).logits
            expected = prune(model, layers)(input_ids=ids, use_cache=False).logits
        got = _call(skip_layers_logits, case, model, ids.clone(), list(layers))
        with torch.no_grad():
            after = model(input_ids=ids, use_cache=False).logits
        if count_layers(model) != LAYERS or not torch.equal(after, before):
            raise Failure(
                f"on {case}: the model changed; remove every hook afterwards (handle.remove() in a finally block) "
                "and do not prune the model itself"
            )
        if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
            raise _mismatch(case, expected, got, "return the logits, [B, T, V], of the forward pass with hooks on")
        if not torch.allclose(got.float(), expected, atol=1e-5, rtol=1e-4):
            gap = (got.float() - expected).abs().max().item()
            raise _mismatch(
                case,
                "the logits of lp.prune(model, layers)",
                f"logits differing by up to {gap:.3g}",
                "a skipped layer must return its input unchanged: register_forward_hook(hook, with_kwargs=True) "
                "and return args[0] (or kwargs['hidden_states']) in place of the output; run with use_cache=False",
            )


def grade_normalized_loss(normalized_loss: Callable[..., Any]) -> None:
    """Against `heldout_loss(model, ids).normalized`, naming the usual slips."""
    for family, batch, length in [("llama", 2, 16), ("gpt2", 1, 24)]:
        model, ids = _model(family), _ids(batch, length)
        case = f"the logits of a tiny {family} (vocabulary 259) for input_ids of shape {tuple(ids.shape)}"
        with torch.no_grad():
            logits = model(input_ids=ids, use_cache=False).logits
        expected = heldout_loss(model, ids, progress=False).normalized
        got = _as_float(_call(normalized_loss, case, logits.clone(), ids.clone()), case)
        if not math.isclose(got, expected, rel_tol=1e-5):
            raise _mismatch(case, expected, got, _loss_hint(logits, ids, got))


def _loss_hint(logits: torch.Tensor, ids: torch.Tensor, got: float) -> str:
    """Name the likely slip by recomputing the loss the common wrong ways."""

    def entropy(scores: torch.Tensor, targets: torch.Tensor) -> float:
        return nn.functional.cross_entropy(scores.flatten(0, 1), targets.flatten()).item()

    shifted, log_v = entropy(logits[:, :-1], ids[:, 1:]), math.log(logits.shape[-1])
    slips = {
        "the logits at position t predict token t+1: drop the last position's logits and the first token": entropy(
            logits, ids
        )
        / log_v,
        "the logits at position t predict token t+1 (not t-1)": entropy(logits[:, 1:], ids[:, :-1]) / log_v,
        "divide the mean loss (nats) by log V, the loss of a uniform guess": shifted,
        "use the natural log for log V, as the loss is in nats": shifted / math.log2(logits.shape[-1]),
    }
    for hint, value in slips.items():
        if math.isclose(got, value, rel_tol=1e-4):
            return hint
    return "mean cross-entropy over the B(T-1) next-token predictions, divided by log V (V = logits.shape[-1])"


# 4. Results ----------------------------------------------------------------------------------------------------


def grade_pruned_parameters(pruned_parameters: Callable[..., Any]) -> None:
    """Against the parameter count of `prune(model, layers)`, with tied embeddings."""
    for family, layers in [("llama", [1, 2]), ("llama", [5]), ("gpt2", [0, 3])]:
        model = _model(family)
        tied = " (input and output embeddings tied)" if family == "gpt2" else ""
        case = f"a tiny {family}{tied} with {LAYERS} layers, layers = {layers}"
        expected = sum(p.numel() for p in prune(model, layers).parameters())
        got = _call(pruned_parameters, case, model, list(layers))
        if count_layers(model) != LAYERS:
            raise Failure(f"on {case}: the model lost layers; count without pruning it (or prune a copy)")
        if isinstance(got, bool) or not isinstance(got, int | np.integer) or got != expected:
            hint = "all parameters, minus those of the removed decoder layers (each tensor counted once)"
            tensors = sum(v.numel() for v in model.state_dict().values())
            if got == expected + tensors - sum(p.numel() for p in model.parameters()):
                hint = "tied weights are one tensor: count model.parameters(), which yields each tensor once"
            raise _mismatch(case, expected, got, hint)


# 5. Across models ----------------------------------------------------------------------------------------------


def grade_layers_to_remove(layers_to_remove: Callable[..., Any]) -> None:
    """Against `layers_for_fraction` on a grid that includes exact halves."""
    for num_layers in (6, 8, 10, 18, 30, 32):
        for fraction in (0.0, 0.1, 0.125, 0.2, 0.25, 0.3, 0.45, 0.5, 0.75, 0.9):
            case = f"num_layers = {num_layers}, fraction = {fraction}"
            expected = layers_for_fraction(num_layers, fraction)
            got = _call(layers_to_remove, case, num_layers, fraction)
            if isinstance(got, bool) or not isinstance(got, int | np.integer) or got != expected:
                exact = fraction * num_layers
                hint = "the nearest integer to fraction × num_layers, halves rounded up, as an int"
                if got == round(exact) and got != expected:
                    hint = f"round() sends halves to the even neighbour: round({exact}) is {got}; use floor(x + 0.5)"
                elif got == int(exact) and got != expected:
                    hint = "int() truncates; take the nearest integer, halves rounded up"
                raise _mismatch(case, expected, got, hint)


def grade_block_influence(block_influence: Callable[..., Any]) -> None:
    """Against the "block_influence" strategy for every n, ties included."""
    for name, profile in _profiles():
        for n in range(1, profile.num_layers):
            case = f"profile.mean of {name}, n = {n}"
            expected = list(select_block(profile, n, "block_influence").layers)
            got = _as_int_list(_call(block_influence, case, profile.mean.copy(), n), case)
            if got != expected:
                single = profile.curve(1)
                if sorted(got) == expected:
                    hint = "return the layers in increasing order"
                elif profile.num_layers in got:
                    hint = "row 1 has L entries, l = 0..L-1 (D[1, L] is NaN)"
                elif np.unique(single).size < single.size:
                    hint = "ties go to the shallower layer: np.argsort(mean[1, :L], kind='stable')"
                else:
                    hint = "the n layers l with the smallest D[1, l] = mean[1, l]"
                raise _mismatch(case, expected, got, hint)


def _exercises(items: Iterable[tuple[str, str, str, Callable[..., Any]]]) -> dict[str, Exercise]:
    table = {}
    for chapter, title, signature, grade in items:
        name = signature.partition("(")[0]
        table[name] = Exercise(chapter, title, name, signature, grade)
    return table


EXERCISES: dict[str, Exercise] = _exercises(
    [
        ("01_similarity", "The angular distance, accurately", "angular_distance(a, b)", grade_angular_distance),
        ("01_similarity", "The residual stream", "residual_stream(model, input_ids)", grade_residual_stream),
        ("02_selection", "The optimal block by hand", "optimal_start(mean, n)", grade_optimal_start),
        ("02_selection", "The heuristic's block", "last_block(num_layers, n)", grade_last_block),
        (
            "03_healing",
            "Skipping layers with hooks",
            "skip_layers_logits(model, input_ids, layers)",
            grade_skip_layers_logits,
        ),
        ("03_healing", "The normalised loss by hand", "normalized_loss(logits, input_ids)", grade_normalized_loss),
        (
            "04_results",
            "Parameters after pruning",
            "pruned_parameters(model, layers)",
            grade_pruned_parameters,
        ),
        ("05_across_models", "Layers for a fraction", "layers_to_remove(num_layers, fraction)", grade_layers_to_remove),
        ("05_across_models", "Block influence", "block_influence(mean, n)", grade_block_influence),
    ]
)


def chapter_exercises(chapter: str) -> list[Exercise]:
    """The exercises of one chapter notebook (by its stem, e.g. ``01_similarity``), in order."""
    return [e for e in EXERCISES.values() if e.chapter == chapter]


def exercises_named(names: Sequence[str]) -> list[Exercise]:
    """The exercises whose function names appear in `names`, in registry order."""
    return [e for e in EXERCISES.values() if e.name in names]
