"""The logit lens: how early each layer's residual stream already predicts the model's next token."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from .adapters import get_adapter, model_device
from .similarity import pair_distance
from .validation import check_token_blocks


@dataclass(frozen=True)
class LogitLens:
    """Per residual-stream position l = 0..L (x^(l) enters layer l; x^(L) leaves the last layer):
    top-1 agreement with the full model's prediction and next-token loss when decoded by the final norm and
    the output head; and, at each sequence's last token, the angular distance from x^(l) to the final state
    taken before the final norm (the paper's x^(L)) and after it (the last `output_hidden_states` entry)."""

    agreement: list[float]
    loss: list[float]
    to_final_prenorm: list[float]
    to_final_postnorm: list[float]
    tokens: int

    def as_dict(self) -> dict:
        return asdict(self)


def _decode(model: nn.Module, norm: nn.Module, stream: torch.Tensor) -> torch.Tensor:
    logits = model.get_output_embeddings()(norm(stream)).float()
    cap = getattr(model.config, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


@torch.no_grad()
def logit_lens(model: nn.Module, blocks: torch.Tensor, *, batch_size: int = 4, progress: bool = True) -> LogitLens:
    """Decode every layer's residual stream with the final norm and head, over [N, T] token blocks."""
    check_token_blocks("blocks", blocks)
    adapter = get_adapter(model)
    layers, norm = adapter.decoder_layers(model), adapter.norm(model)
    device = model_device(model)  # with a device_map, the streams are gathered on the embeddings' device
    streams: list[torch.Tensor] = []

    def keep_input(module, args, kwargs):
        streams.append((args[0] if args else kwargs["hidden_states"]).to(device))

    def keep_output(module, args, output):
        streams.append((output[0] if isinstance(output, tuple) else output).to(device))

    hooks = [layers[0].register_forward_pre_hook(keep_input, with_kwargs=True)]
    hooks += [layer.register_forward_hook(keep_output) for layer in layers]
    positions = len(layers) + 1
    agree, loss = torch.zeros(positions, dtype=torch.float64), torch.zeros(positions, dtype=torch.float64)
    prenorm, postnorm = torch.zeros(positions, dtype=torch.float64), torch.zeros(positions, dtype=torch.float64)
    count = 0
    was_training = model.training
    model.eval()
    try:
        for batch in tqdm(blocks.split(batch_size), desc="logit lens", disable=not progress, leave=False):
            streams.clear()
            ids = batch.to(device)
            final = model(input_ids=ids, use_cache=False).logits[:, :-1].argmax(-1)
            targets = ids[:, 1:]
            for index, stream in enumerate(streams):
                logits = _decode(model, norm, stream[:, :-1]).to(device)
                agree[index] += (logits.argmax(-1) == final).sum().item()
                loss[index] += nn.functional.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum"
                ).item()
            last = nn.functional.normalize(torch.stack([x[:, -1] for x in streams]).double(), dim=-1)
            normed = nn.functional.normalize(norm(streams[-1][:, -1:]).squeeze(1).double(), dim=-1).to(device)
            prenorm += pair_distance(last, last[-1:]).sum(-1).cpu()
            postnorm += pair_distance(last, normed.unsqueeze(0)).sum(-1).cpu()
            count += targets.numel()
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    sequences = blocks.shape[0]
    return LogitLens(
        (agree / count).tolist(),
        (loss / count).tolist(),
        (prenorm / sequences).tolist(),
        (postnorm / sequences).tolist(),
        count,
    )
