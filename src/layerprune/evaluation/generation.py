"""Greedy generations from several models on the same prompts, and BLEU against a reference model."""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from ..adapters import model_device


@torch.no_grad()
def greedy_generate(
    model: nn.Module, tokenizer: PreTrainedTokenizerBase, prompts: list[str], *, max_new_tokens: int = 40
) -> list[str]:
    """Greedy continuations (KV cache on) of each prompt, without the prompt."""
    outputs = []
    for prompt in prompts:
        encoded = tokenizer(prompt, return_tensors="pt").to(model_device(model))
        generated = model.generate(
            **encoded, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
        outputs.append(tokenizer.decode(generated[0, encoded["input_ids"].shape[1] :], skip_special_tokens=True))
    return outputs


def bleu(references: list[str], hypotheses: list[str]) -> float:
    """Corpus BLEU (sacrebleu, 0-100) of `hypotheses` against `references`."""
    import sacrebleu

    return float(sacrebleu.corpus_bleu(hypotheses, [references]).score)
