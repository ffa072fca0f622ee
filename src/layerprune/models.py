"""Loading models: embedded names, local directories or Hugging Face hub ids, optionally in 4/8 bit, on one
device or placed by accelerate over GPUs, CPU and disk."""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
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
from .machine import native_bf16_cpu
from .tiny import TINY_NAMES, TINY_PREFIX, tiny_model_dir

Quantization = Literal["4bit", "8bit"] | None
QUANTIZATIONS = ("4bit", "8bit")
DTYPE_ENV = "LAYERPRUNE_DTYPE"
AUTO = "auto"
DTYPE_CHOICES = (AUTO, "float32", "bfloat16", "float16")
DeviceMap = str | Mapping[str, int | str | torch.device]
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")


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


def auto_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 on CUDA and on CPUs with native bf16 (AMX or AVX512-BF16), float32 elsewhere (bf16 is slow there)."""
    if device.type == "cuda" or (device.type == "cpu" and native_bf16_cpu()):
        return torch.bfloat16
    return torch.float32


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """The dtype to load in on `device`.

    Precedence: an explicit `dtype` (a torch.dtype or a name such as "float32") wins; when `dtype` is None or
    "auto", the environment variable LAYERPRUNE_DTYPE decides if it is set (a name, or "auto"); otherwise
    "auto" (`auto_dtype`): bfloat16 on CUDA and on CPUs with native bf16, float32 elsewhere.
    """
    if dtype is None or dtype == AUTO:
        chosen = os.environ.get(DTYPE_ENV, "").strip() or AUTO
        return auto_dtype(device) if chosen == AUTO else _floating_dtype(chosen, f"{DTYPE_ENV}={chosen!r}")
    return _floating_dtype(dtype, f"dtype {dtype!r}")


def _floating_dtype(dtype: str | torch.dtype, given: str) -> torch.dtype:
    resolved = dtype if isinstance(dtype, torch.dtype) else getattr(torch, str(dtype), None)
    if not isinstance(resolved, torch.dtype) or not resolved.is_floating_point:
        raise InvalidInputError(
            f"{given} is not a floating-point torch dtype (use {', '.join(map(repr, DTYPE_CHOICES))})"
        )
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


def quantization_config(quantization: Quantization, dtype: torch.dtype) -> BitsAndBytesConfig | None:
    """A bitsandbytes config: 8-bit, or NF4 computing (and storing its packed weights) in the model's `dtype`."""
    if quantization is None:
        return None
    if quantization not in QUANTIZATIONS:
        raise InvalidInputError(f"quantization {quantization!r} is not one of {QUANTIZATIONS} or None")
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=dtype,
        bnb_4bit_use_double_quant=True,
        bnb_4bit_quant_storage=dtype,
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
    device_map: DeviceMap | None = None,
    max_memory: Mapping[int | str, int | str] | None = None,
    offload_folder: str | Path | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer, in eval mode.

    `name_or_path` is an embedded name (e.g. ``"smollm2-135m"``), a tiny random test model (``"tiny-llama"``),
    a local directory, or a hub id. `dtype` None or "auto" follows `resolve_dtype`. For a model bigger than one
    device, `device_map`, `max_memory` and `offload_folder` go to accelerate (see `load_causal_lm`).
    """
    source = resolve_source(name_or_path)
    config = _load_config(source, name_or_path)
    adapter_for_model_type(config.model_type)
    model = load_causal_lm(
        source,
        dtype=dtype,
        device=device,
        quantization=quantization,
        device_map=device_map,
        max_memory=max_memory,
        offload_folder=offload_folder,
    )
    if str(name_or_path) in EMBEDDED_MODELS or str(name_or_path) in TINY_NAMES:
        model.config.name_or_path = str(name_or_path)  # the name, not its machine-specific cache directory
    return model, load_tokenizer(source)


def load_causal_lm(
    source: str | Path,
    *,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
    quantization: Quantization = None,
    device_map: DeviceMap | None = None,
    max_memory: Mapping[int | str, int | str] | None = None,
    offload_folder: str | Path | None = None,
) -> PreTrainedModel:
    """The model alone, from a resolved directory or hub id, in eval mode; 4-bit weights stay in their format.

    Without `device_map` the whole model goes to `device`. With it ("auto", "balanced", "balanced_low_0",
    "sequential", or a dict from module name to a GPU index, "cpu" or "disk") accelerate places the modules,
    within `max_memory` per device; "disk" modules are read from the checkpoint's safetensors when used, or
    from `offload_folder` where they cannot be. Inputs then go to the device of the embeddings
    (`loss.model_device`), and `device` only decides the "auto" dtype.
    """
    target = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, target)
    quant = quantization_config(quantization, torch_dtype)
    kwargs: dict = {"dtype": torch_dtype} | placement_kwargs(device_map, max_memory, offload_folder)
    if quant is not None:
        kwargs = {"device_map": {"": str(target)}} | kwargs | {"quantization_config": quant}
    model = AutoModelForCausalLM.from_pretrained(str(source), **kwargs)
    if "device_map" not in kwargs:
        model.to(target)
    if quantization == "4bit":
        disable_cpu_weight_packing(model)
    return model.eval()


def quantized_model(
    model: PreTrainedModel, quantization: Quantization, device: str | torch.device | None = None
) -> PreTrainedModel:
    """A 4-bit or 8-bit model of an in-memory full-precision `model`, built from its state dict in memory: the
    weights `load_causal_lm` gives for the model saved and loaded with `quantization` (same dtype, same quantized
    bytes), without a saved copy on disk or a second full-precision copy in memory.

    The tensors that stay unquantized (embeddings, norms, biases) may share their storage with `model`'s where the
    dtype does not change; `model` itself is left as it was.
    """
    if quantization is None:
        raise InvalidInputError("quantized_model needs a quantization ('4bit' or '8bit')")
    target = resolve_device(device)
    torch_dtype = resolve_dtype(None, target)
    quantized = type(model).from_pretrained(
        None,
        config=copy.deepcopy(model.config),
        state_dict=model.state_dict(),
        dtype=torch_dtype,
        device_map={"": str(target)},
        quantization_config=quantization_config(quantization, torch_dtype),
    )
    quantized.config.name_or_path = model.config.name_or_path
    if quantization == "4bit":
        disable_cpu_weight_packing(quantized)
    return quantized.eval()


def placement_kwargs(
    device_map: DeviceMap | None,
    max_memory: Mapping[int | str, int | str] | None,
    offload_folder: str | Path | None,
) -> dict:
    """The from_pretrained arguments of an accelerate placement, checked."""
    if device_map is None:
        if max_memory is not None or offload_folder is not None:
            raise InvalidInputError("max_memory and offload_folder need a device_map (e.g. 'auto')")
        return {}
    if isinstance(device_map, str) and device_map not in DEVICE_MAPS:
        raise InvalidInputError(f"device_map {device_map!r} is not one of {DEVICE_MAPS} or a dict")
    if not isinstance(device_map, str | Mapping):
        raise InvalidInputError(f"device_map must be one of {DEVICE_MAPS} or a dict, got {device_map!r}")
    kwargs: dict = {"device_map": device_map if isinstance(device_map, str) else dict(device_map)}
    if max_memory is not None:
        kwargs["max_memory"] = dict(max_memory)
    if offload_folder is not None:
        kwargs["offload_folder"] = str(offload_folder)
    return kwargs


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
