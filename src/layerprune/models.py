"""Loading models: embedded names, local directories or Hugging Face hub ids, optionally in 4/8 bit."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    BitsAndBytesConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from .adapters import adapter_for_model_type
from .assets import EMBEDDED_MODELS, embedded_model_dir
from .errors import InvalidInputError, ModelLoadError
from .tiny import TINY_NAMES, TINY_PREFIX, tiny_model_dir

Quantization = Literal["4bit", "8bit"] | None
QUANTIZATIONS = ("4bit", "8bit")


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """A torch device from a name, defaulting to CUDA when available."""
    if device is None:
        return default_device()
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise InvalidInputError(f"device {device!r} is not a torch device (use 'cpu' or 'cuda')") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError(f"device {device!r} was asked for, but CUDA is not available on this machine")
    return resolved


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """float32 on CPU and bfloat16 on CUDA by default; names like 'bfloat16' are accepted."""
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    resolved = getattr(torch, str(dtype), None)
    if not isinstance(resolved, torch.dtype) or not resolved.is_floating_point:
        raise InvalidInputError(f"dtype {dtype!r} is not a floating-point torch dtype (e.g. 'float32', 'bfloat16')")
    return resolved


def resolve_source(name_or_path: str | Path) -> str:
    """An embedded name becomes its cached directory; a local model directory is checked; else a hub id."""
    text = str(name_or_path)
    if text in EMBEDDED_MODELS:
        return str(embedded_model_dir(text))
    if text in TINY_NAMES:
        return str(tiny_model_dir(text.removeprefix(TINY_PREFIX)))
    path = Path(text).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} exists but is not a model directory (it has no config.json)")
        return str(path.resolve())
    if text.startswith((".", "/", "~")) or text.count("/") > 1:
        raise ModelLoadError(f"model directory {text!r} does not exist")
    return text


def quantization_config(quantization: Quantization, device: torch.device, dtype: torch.dtype):
    """A bitsandbytes config: NF4 with float32 compute on CPU (bf16 is slow there), `dtype` on CUDA."""
    if quantization is None:
        return None
    if quantization not in QUANTIZATIONS:
        raise InvalidInputError(f"quantization {quantization!r} is not one of {QUANTIZATIONS} or None")
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    compute = torch.float32 if device.type == "cpu" else dtype
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=compute,
        bnb_4bit_use_double_quant=True,
        bnb_4bit_quant_storage=compute,
    )


def load_tokenizer(source: str) -> PreTrainedTokenizerBase:
    """The model's tokenizer, given a pad token (its EOS) when it has none."""
    tokenizer = AutoTokenizer.from_pretrained(source)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    name_or_path: str | Path,
    *,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
    quantization: Quantization = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer, in eval mode.

    `name_or_path` is an embedded name (e.g. ``"smollm2-135m"``), a tiny random test model (``"tiny-llama"``),
    a local directory, or a hub id.
    """
    source = resolve_source(name_or_path)
    config = _load_config(source, name_or_path)
    adapter_for_model_type(config.model_type)
    model = load_causal_lm(source, dtype=dtype, device=device, quantization=quantization)
    if str(name_or_path) in EMBEDDED_MODELS or str(name_or_path) in TINY_NAMES:
        model.config.name_or_path = str(name_or_path)  # the name, not its machine-specific cache directory
    return model, load_tokenizer(source)


def load_causal_lm(
    source: str | Path,
    *,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
    quantization: Quantization = None,
) -> PreTrainedModel:
    """The model alone, from a resolved directory or hub id, in eval mode; 4-bit weights stay in their format."""
    target = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, target)
    quant = quantization_config(quantization, target, torch_dtype)
    kwargs: dict = {"dtype": torch_dtype}
    if quant is not None:
        kwargs |= {"quantization_config": quant, "device_map": {"": str(target)}}
    model = AutoModelForCausalLM.from_pretrained(str(source), **kwargs)
    if quant is None:
        model.to(target)
    if quantization == "4bit":
        disable_cpu_weight_packing(model)
    return model.eval()


def disable_cpu_weight_packing(model: torch.nn.Module) -> None:
    """Keep bitsandbytes 4-bit weights in their stored format on CPUs with AVX512-BF16.

    There, a Linear4bit run in eval mode without gradients repacks its weights once, for good, into a CPU
    layout with bfloat16 block scales: results would then differ between machines and between evaluation and
    training, dequantizing for a merge would misread the weights, and the repacking fails for small layers.
    """
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


def _load_config(source: str, requested: str | Path):
    try:
        return AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as error:
        raise ModelLoadError(
            f"could not load model {str(requested)!r}: it is not an embedded model "
            f"({', '.join(EMBEDDED_MODELS)}), not a tiny test model ({', '.join(TINY_NAMES)}), "
            f"not a local model directory, and the Hugging Face hub could not provide it "
            f"({type(error).__name__}: {str(error).splitlines()[0]})"
        ) from error
