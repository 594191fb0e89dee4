"""Language-model measurements shared by chapters: token negative log-likelihood and perplexity."""

from __future__ import annotations

import math

import torch


@torch.no_grad()
def window_nll(model, input_ids: torch.Tensor) -> tuple[float, int]:
    """(summed NLL in nats, number of predicted tokens) of one window of ids, shape (1, T)."""
    logits = model(input_ids).logits[:, :-1].float()
    targets = input_ids[:, 1:]
    nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                            reduction="sum")
    return float(nll), targets.numel()


def perplexity_of_ids(model, ids: torch.Tensor, window: int) -> float:
    """exp(mean token NLL) over consecutive non-overlapping windows of ``window`` tokens.

    This is the usual WikiText protocol of pruning papers (Wanda, SparseGPT): the text is cut into
    windows of the model's context length, each window scored on its own.
    """
    if ids.ndim != 1:
        raise ValueError(f"expected a 1-D tensor of token ids, got shape {tuple(ids.shape)}")
    if window < 2:
        raise ValueError(f"window must be at least 2 tokens, got {window}")
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for start in range(0, len(ids) - 1, window):
        chunk = ids[start:start + window]
        if len(chunk) < 2:
            break
        nll, n = window_nll(model, chunk.unsqueeze(0).to(device))
        total, count = total + nll, count + n
    if count == 0:
        raise ValueError("the text is shorter than two tokens")
    return math.exp(total / count)


def perplexity(model, tokenizer, text: str, max_tokens: int | None = None, window: int = 512) -> float:
    ids = tokenizer(text, return_tensors="pt").input_ids[0]
    if max_tokens is not None:
        ids = ids[:max_tokens]
    return perplexity_of_ids(model, ids, window)


def random_windows(ids: torch.Tensor, count: int, length: int, seed: int) -> torch.Tensor:
    """``count`` windows of ``length`` consecutive tokens from a 1-D id tensor, at seeded random starts
    (the calibration sampling of Wanda and SparseGPT). Returns shape (count, length)."""
    if ids.ndim != 1 or len(ids) <= length:
        raise ValueError(f"need a 1-D id tensor longer than {length} tokens, got shape {tuple(ids.shape)}")
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(ids) - length, (count,), generator=generator)
    return torch.stack([ids[s:s + length] for s in starts.tolist()])
