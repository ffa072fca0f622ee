"""Healing a pruned model as in the paper: QLoRA (4-bit NF4 base, LoRA on the FFN projections, alpha = rank,
dropout 0.05), AdamW, cosine schedule with warm-up; seeded, checkpointed and resumable, data-parallel under
``accelerate launch``. Budgets: `layerprune.healing.settings`."""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase, get_scheduler
from transformers.pytorch_utils import Conv1D

from ..adapters import get_adapter, num_layers
from ..cache import model_identity, tensor_digest
from ..errors import InvalidInputError
from ..loss import HeldoutLoss, heldout_loss, next_token_loss_sum, vocab_size
from ..machine import release_memory
from ..models import Quantization, load_model, quantized_model
from ..surgery import shared_copy
from ..validation import check_int, check_token_blocks, check_vocabulary
from .checkpoints import Checkpoint, load_checkpoint, save_checkpoint
from .parallel import BlockSampler, Processes
from .settings import CPU_DEFAULTS, MAX_GRAD_NORM, WEIGHT_DECAY, Recipe


@dataclass
class HealResult:
    """A healed model (the PeftModel), its per-step loss and learning rate, held-out losses and throughput."""

    model: PeftModel
    tokenizer: PreTrainedTokenizerBase
    losses: list[float]
    learning_rates: list[float]
    evaluations: list[tuple[int, HeldoutLoss]]
    seconds: float
    tokens: int
    record: dict[str, Any]
    resumed_from: int = 0
    heldout_before: HeldoutLoss | None = field(init=False)
    heldout_after: HeldoutLoss | None = field(init=False)

    def __post_init__(self) -> None:
        self.heldout_before, self.heldout_after = _before_and_after(self.evaluations)

    @property
    def tokens_per_second(self) -> float:
        """Training throughput over all steps (all processes together), evaluation excluded."""
        return self.tokens / self.seconds if self.seconds > 0 else float("nan")

    def summary(self) -> dict[str, Any]:
        """Everything but the model, as JSON-serialisable values."""
        return {
            "healing": self.record,
            "losses": self.losses,
            "learning_rates": self.learning_rates,
            "evaluations": [{"step": step, **loss.as_dict()} for step, loss in self.evaluations],
            "seconds": self.seconds,
            "tokens": self.tokens,
            "tokens_per_second": self.tokens_per_second,
            "resumed_from": self.resumed_from,
        }


def heal(
    model_or_path: PreTrainedModel | str | Path,
    tokenizer: PreTrainedTokenizerBase,
    train_blocks: torch.Tensor,
    *,
    quantization: Quantization = CPU_DEFAULTS.quantization,
    rank: int = CPU_DEFAULTS.rank,
    alpha: float | None = None,
    dropout: float = 0.05,
    targets: str | Sequence[str] = "ffn",
    lr: float = CPU_DEFAULTS.lr,
    steps: int = CPU_DEFAULTS.steps,
    batch_size: int = CPU_DEFAULTS.batch_size,
    grad_accum: int = CPU_DEFAULTS.grad_accum,
    warmup: int = CPU_DEFAULTS.warmup,
    schedule: str = "cosine",
    seed: int = 0,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 50,
    eval_blocks: torch.Tensor | None = None,
    eval_every: int | None = None,
    gradient_checkpointing: bool | None = None,
    data_name: str | None = None,
    progress: bool = True,
) -> HealResult:
    """Heal a (pruned) model with LoRA on a quantized (QLoRA) or full-precision base; returns a `HealResult`.

    `model_or_path` is an in-memory full-precision model (not modified: it is quantized, or LoRA wraps a copy that
    shares its frozen tensors) or anything
    `load_model` accepts. Each optimizer step uses ``batch_size * grad_accum`` blocks of `train_blocks` ([N, T]
    token ids), split over the processes under ``accelerate launch``; `alpha` defaults to `rank`; `targets` is
    ``"ffn"`` (the architecture's FFN projections, as in the paper) or module-name suffixes. With
    `checkpoint_dir`, a checkpoint is written every `checkpoint_every` steps and at the end, and a new call
    resumes from the latest valid one. With `eval_blocks`, the held-out loss is measured before, after and every
    `eval_every` steps. `gradient_checkpointing` (recomputing activations in the backward pass: the same numbers,
    less memory, more compute) is on for every layer or off; by default it is on for CUDA, and on a CPU only for
    every k-th layer where a step would otherwise keep more than `KEPT_ACTIVATIONS` (`recompute_every`).
    """
    recipe = Recipe.checked(
        quantization, rank, alpha, dropout, lr, steps, batch_size, grad_accum, warmup, schedule, seed
    )
    checkpoint_every = check_int("checkpoint_every", checkpoint_every, 1)
    check_token_blocks("train_blocks", train_blocks)
    _check_evaluation(eval_blocks, eval_every)
    procs = Processes.current()
    _check_split(recipe, procs)
    base = load_base(model_or_path, quantization, procs.device)
    suffixes = lora_targets(base, targets)
    for blocks in (train_blocks, eval_blocks):
        if blocks is not None:
            check_vocabulary(blocks, vocab_size(base))
    record = recipe.record(suffixes, train_blocks, procs.world, data_name)
    settings = _settings(record, base, train_blocks) if checkpoint_dir is not None else {}
    if gradient_checkpointing is None:
        every = 1 if procs.device.type == "cuda" else recompute_every(base, recipe.batch_size, train_blocks.shape[1])
    else:
        every = 1 if gradient_checkpointing else None
    model = _attach_lora(base, recipe, suffixes, every)
    torch.manual_seed(recipe.seed + procs.rank)
    run = _Run(model, recipe, procs, train_blocks, eval_blocks, progress)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="MatMul8bitLt: inputs will be cast")
        run.train(Path(checkpoint_dir) if checkpoint_dir is not None else None, settings, checkpoint_every, eval_every)
    _record_healing(model, record, run)
    release_memory()  # training's freed activations go back to the system, not kept by the allocator for later
    return HealResult(
        model=model,
        tokenizer=tokenizer,
        losses=run.losses,
        learning_rates=run.learning_rates,
        evaluations=run.evaluations,
        seconds=run.seconds,
        tokens=run.tokens,
        record=model.get_base_model().config.layerprune["healing"],
        resumed_from=run.resumed_from,
    )


KEPT_ACTIVATIONS = 512 * 2**20
"""On a CPU, about the most activation bytes one healing step keeps for its backward pass: beyond it every k-th
decoder layer recomputes its own (`recompute_every`). Qwen2.5-Coder-1.5B pruned to 20 layers, 4 blocks of 128
tokens, would keep about 1.1 GB and recomputes every layer's: measured alone, a step then peaks 0.71 GiB lower for
1.38x the time (every second layer's: 0.27 GiB lower for 1.17x, too thin a margin under the default book's 8 GB);
SmolLM2-135M keeps its 0.3 GB. With the head applied slice by slice (`loss.HEAD_SLICE_BYTES`) these
activations are most of what healing adds to the model."""


def saved_activation_bytes(model: PreTrainedModel, batch_size: int, block_size: int) -> int:
    """About what one training step keeps for its backward pass: per token and decoder layer, a dozen
    hidden-size vectors (norms, attention, residuals) and four of the FFN's intermediate size, in the model's dtype."""
    config = model.config.get_text_config()
    intermediate = getattr(config, "intermediate_size", None) or 4 * config.hidden_size
    per_token = num_layers(model) * (12 * config.hidden_size + 4 * intermediate)
    return batch_size * block_size * per_token * next(model.parameters()).element_size()


def recompute_every(model: PreTrainedModel, batch_size: int, block_size: int, budget: int | None = None) -> int | None:
    """Recompute the activations of every k-th decoder layer (layers 0, k, 2k, ...; None: of none), with k the
    largest for which the other layers keep at most `budget` bytes (default `KEPT_ACTIVATIONS`;
    `saved_activation_bytes`)."""
    budget = KEPT_ACTIVATIONS if budget is None else budget
    layers = num_layers(model)
    per_layer = saved_activation_bytes(model, batch_size, block_size) / layers
    if per_layer * layers <= budget:
        return None
    return next(k for k in range(layers, 0, -1) if (layers - math.ceil(layers / k)) * per_layer <= budget)


def _check_evaluation(eval_blocks: torch.Tensor | None, eval_every: int | None) -> None:
    if eval_blocks is not None:
        check_token_blocks("eval_blocks", eval_blocks)
    if eval_every is not None:
        check_int("eval_every", eval_every, 1)
        if eval_blocks is None:
            raise InvalidInputError("eval_every needs eval_blocks (the held-out blocks to evaluate)")


def _check_split(recipe: Recipe, procs: Processes) -> None:
    per_step = recipe.batch_size * recipe.grad_accum
    if per_step < procs.world:
        raise InvalidInputError(
            f"batch_size x grad_accum = {per_step} blocks per step cannot be split over {procs.world} processes; "
            "use at least one block per process"
        )


def load_base(
    model_or_path: PreTrainedModel | str | Path, quantization: Quantization, device: torch.device
) -> PreTrainedModel:
    """The model to train: loaded (quantized) from a path, or a quantized / full-precision copy of a model.

    A copy of an in-memory model holds no second full-precision copy of its weights: without quantization it is a
    `shared_copy` (new module shells over the same frozen tensors, which training never writes), quantized it is
    built from the model's state dict in memory (`models.quantized_model`). The model itself is left as it was,
    `requires_grad` included; `.to(device)` moves only the copy."""
    if isinstance(model_or_path, str | Path):
        model, _ = load_model(model_or_path, device=device, quantization=quantization)
    elif not isinstance(model_or_path, PreTrainedModel) or isinstance(model_or_path, PeftModel):
        raise InvalidInputError(
            "model_or_path must be a transformers model, a directory or a model name, "
            f"got {type(model_or_path).__name__}"
        )
    elif getattr(model_or_path.config, "quantization_config", None) is not None:
        raise InvalidInputError(
            "the model is already quantized; pass the full-precision model (or its directory) and the quantization"
        )
    elif quantization is None:
        model = shared_copy(model_or_path).to(device)
    else:
        model = quantized_model(model_or_path, quantization, device)
    return model


def linear_suffixes(model: nn.Module) -> list[str]:
    """The module-name suffixes of the linear layers, with the decoder-layer prefix ("model.layers.3.") removed."""
    prefix = get_adapter(model).layers + "."
    suffixes = set()
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear | Conv1D):
            inner = name.removeprefix(prefix)
            suffixes.add(inner.split(".", 1)[1] if inner != name and "." in inner else name)
    return sorted(suffixes)


def lora_targets(model: nn.Module, targets: str | Sequence[str]) -> tuple[str, ...]:
    """The LoRA target suffixes: "ffn" (the architecture's FFN projections) or explicit linear-layer suffixes."""
    available = linear_suffixes(model)
    if targets == "ffn":
        return get_adapter(model).ffn
    if isinstance(targets, str) or not targets or not all(isinstance(t, str) for t in targets):
        raise InvalidInputError(f"targets must be 'ffn' or a list of module-name suffixes from {available}")
    names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear | Conv1D)]
    unknown = [t for t in targets if not any(name == t or name.endswith("." + t) for name in names)]
    if unknown:
        raise InvalidInputError(
            f"LoRA target(s) {unknown} match no linear layer of this {model.config.model_type} model; "
            f"use 'ffn' or suffixes from {available}"
        )
    return tuple(targets)


def _attach_lora(model: PreTrainedModel, recipe: Recipe, targets: Sequence[str], every: int | None) -> PeftModel:
    """Freeze `model` and add seeded LoRA adapters (alpha, dropout of `recipe`) to the `targets`; every `every`-th
    decoder layer recomputes its activations in the backward pass (None: none)."""
    if recipe.quantization is not None:
        prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if every:
        kwargs = {"use_reentrant": False}
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs, every_n_layers=every)
    config = LoraConfig(
        r=recipe.rank,
        lora_alpha=recipe.alpha,
        lora_dropout=recipe.dropout,
        target_modules=list(targets),
        fan_in_fan_out=_targets_conv1d(model, targets),
        bias="none",
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(recipe.seed)
    peft_model = get_peft_model(model, config)
    peft_model.train()
    return peft_model


def _targets_conv1d(model: nn.Module, targets: Sequence[str]) -> bool:
    """Whether the targets are GPT-2 style Conv1D layers (weights stored transposed), which LoRA must know."""
    return any(
        isinstance(module, Conv1D) and any(name == t or name.endswith("." + t) for t in targets)
        for name, module in model.named_modules()
    )


def _settings(record: dict[str, Any], model: nn.Module, blocks: torch.Tensor) -> dict[str, Any]:
    """What makes two runs the same run: the recipe, the base model's identity and the training data."""
    settings = {**record, "model": model_identity(model), "data_digest": tensor_digest(blocks)}
    settings.pop("data")
    return json.loads(json.dumps(settings))


class _Run:
    """The training loop of one `heal` call, with its progress (restored from a checkpoint when resuming)."""

    def __init__(
        self,
        model: PeftModel,
        recipe: Recipe,
        procs: Processes,
        train_blocks: torch.Tensor,
        eval_blocks: torch.Tensor | None,
        progress: bool,
    ) -> None:
        self.model, self.recipe, self.procs = model, recipe, procs
        self.train_blocks, self.eval_blocks = train_blocks, eval_blocks
        self.progress = progress and procs.main
        self.params = {name: p for name, p in model.named_parameters() if p.requires_grad}
        self.optimizer = torch.optim.AdamW(self.params.values(), lr=recipe.lr, weight_decay=WEIGHT_DECAY)
        self.scheduler = get_scheduler(recipe.schedule, self.optimizer, recipe.warmup, recipe.steps)
        self.sampler = BlockSampler(len(train_blocks), recipe.batch_size * recipe.grad_accum, recipe.seed)
        self.step, self.resumed_from, self.seconds = 0, 0, 0.0
        self.losses: list[float] = []
        self.learning_rates: list[float] = []
        self.evaluations: list[tuple[int, HeldoutLoss]] = []

    @property
    def tokens(self) -> int:
        return self.step * self.sampler.per_step * int(self.train_blocks.shape[1])

    def train(self, checkpoint_dir: Path | None, settings: dict, every: int, eval_every: int | None) -> None:
        if checkpoint_dir is not None:
            self._resume(checkpoint_dir, settings)
        if self.eval_blocks is not None and not self.evaluations:
            self.evaluations.append((self.step, self._evaluate()))
        bar = tqdm(total=self.recipe.steps, initial=self.step, desc="healing", disable=not self.progress)
        while self.step < self.recipe.steps:
            self._optimizer_step()
            bar.update(1)
            bar.set_postfix(loss=f"{self.losses[-1]:.3f}", lr=f"{self.learning_rates[-1]:.2e}")
            if eval_every and self.step % eval_every == 0 and self.step < self.recipe.steps:
                self.evaluations.append((self.step, self._evaluate()))
            if checkpoint_dir is not None and (self.step % every == 0 or self.step == self.recipe.steps):
                self._save(checkpoint_dir, settings)
        bar.close()
        if self.eval_blocks is not None and self.evaluations[-1][0] < self.recipe.steps:
            self.evaluations.append((self.step, self._evaluate()))
        self.model.eval()

    def _optimizer_step(self) -> None:
        started = time.perf_counter()
        blocks = self.train_blocks[self.sampler.indices(self.step)]
        shard = blocks.tensor_split(self.procs.world)[self.procs.rank]
        targets = blocks.shape[0] * (blocks.shape[1] - 1)
        loss = torch.zeros((), dtype=torch.float64, device=self.procs.device)
        for micro in shard.split(self.recipe.batch_size):
            loss += next_token_loss_sum(self.model, micro.to(self.procs.device), backward_scale=1 / targets) / targets
        self.losses.append(self._sync_gradients(loss))
        torch.nn.utils.clip_grad_norm_(list(self.params.values()), MAX_GRAD_NORM)
        self.learning_rates.append(self.scheduler.get_last_lr()[0])
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.seconds += time.perf_counter() - started

    def _sync_gradients(self, loss: torch.Tensor) -> float:
        """Sum gradients and loss over processes: every process then holds the whole step's gradient."""
        if self.procs.world > 1:
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params.values()]
            flat = self.procs.sum(torch.cat([g.flatten().double() for g in grads] + [loss.reshape(1)]))
            offset = 0
            for p, g in zip(self.params.values(), grads, strict=True):
                p.grad = flat[offset : offset + g.numel()].view_as(g).to(g.dtype)
                offset += g.numel()
            loss = flat[-1]
        return float(loss)

    def _evaluate(self) -> HeldoutLoss:
        """The held-out loss, its blocks split over the processes."""
        shard = self.eval_blocks.tensor_split(self.procs.world)[self.procs.rank]
        part = heldout_loss(self.model, shard, progress=self.progress) if len(shard) else None
        if self.procs.world == 1:
            return part
        sums = torch.tensor([part.loss * part.tokens, part.tokens] if part else [0.0, 0.0], dtype=torch.float64)
        total, tokens = self.procs.sum(sums.to(self.procs.device)).tolist()
        mean, size = total / tokens, vocab_size(self.model)
        return HeldoutLoss(mean, mean / math.log(size), math.exp(mean), int(tokens), size)

    def _save(self, directory: Path, settings: dict) -> None:
        rng = self.procs.gather(_rng_state())
        if self.procs.main:
            checkpoint = Checkpoint(
                step=self.step,
                state=self._progress_state(),
                adapter=self.params,
                optimizer=self.optimizer.state_dict(),
                scheduler=self.scheduler.state_dict(),
                rng=rng,
            )
            save_checkpoint(directory, checkpoint, settings)
        self.procs.barrier()

    def _resume(self, directory: Path, settings: dict) -> None:
        checkpoint = load_checkpoint(directory, settings)
        if checkpoint is None:
            return
        with torch.no_grad():
            for name, tensor in checkpoint.adapter.items():
                self.params[name].copy_(tensor)
        self.optimizer.load_state_dict(checkpoint.optimizer)
        self.scheduler.load_state_dict(checkpoint.scheduler)
        _set_rng_state(checkpoint.rng[self.procs.rank])
        state = checkpoint.state
        self.step = self.resumed_from = checkpoint.step
        self.losses, self.learning_rates, self.seconds = state["losses"], state["learning_rates"], state["seconds"]
        self.evaluations = [(e["step"], HeldoutLoss(**e["loss"])) for e in state["evaluations"]]

    def _progress_state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "losses": self.losses,
            "learning_rates": self.learning_rates,
            "seconds": self.seconds,
            "evaluations": [{"step": step, "loss": loss.as_dict()} for step, loss in self.evaluations],
        }


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


def _before_and_after(evaluations: list[tuple[int, HeldoutLoss]]) -> tuple[HeldoutLoss | None, HeldoutLoss | None]:
    """The held-out loss at step 0 and at the last evaluation (None when not measured)."""
    before = evaluations[0][1] if evaluations and evaluations[0][0] == 0 else None
    return before, evaluations[-1][1] if evaluations else None


def _record_healing(model: PeftModel, record: dict[str, Any], run: _Run) -> None:
    """Add ``healing`` (recipe, tokens, held-out losses) to the model's ``config.layerprune``."""
    config = model.get_base_model().config
    healing = {**record, "tokens": run.tokens}
    before, after = _before_and_after(run.evaluations)
    if before is not None and after is not None:
        healing["heldout_before"], healing["heldout_after"] = before.as_dict(False), after.as_dict(False)
    config.layerprune = {**(getattr(config, "layerprune", None) or {}), "healing": healing}
