"""Batched scoring and generation with a causal LM, sharing the KV cache of a common prompt prefix.

Prompts of one batch usually share a long prefix (the chat header and, few-shot, all the demos). The
prefix is run once, its cache repeated over the batch, and only the differing tails are run, left-padded
*after* the prefix; explicit position ids keep every real token at its true position. Generation then
continues token by token with the cache, dropping rows from the batch as they finish.
"""

from __future__ import annotations

import copy
import re
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from .prompts import NO_COT_TRIGGER, letter


def common_prefix_length(rows: list[list[int]]) -> int:
    first, n = rows[0], min(len(r) for r in rows)
    for i in range(n):
        if any(r[i] != first[i] for r in rows[1:]):
            return i
    return n


def letter_token_ids(tokenizer, n_letters: int) -> list[int]:
    """The token id of each option letter right after "The best answer is: (" (one token each)."""
    base = tokenizer.encode(NO_COT_TRIGGER, add_special_tokens=False)
    ids = []
    for i in range(n_letters):
        full = tokenizer.encode(NO_COT_TRIGGER + letter(i), add_special_tokens=False)
        if full[:len(base)] != base or len(full) != len(base) + 1:
            raise ValueError(f"the tokenizer does not give option letter {letter(i)!r} its own token after "
                             f"{NO_COT_TRIGGER!r}; letter scoring needs one token per letter")
        ids.append(full[-1])
    return ids


def pad_id_of(tokenizer) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return int(pad if pad is not None else 0)


@torch.no_grad()
def prefix_cache(model, ids: list[int], store: dict | None = None, min_new: int = 32):
    """The KV cache (batch 1) of a token prefix, reusing the longest overlap with a prefix in ``store``.

    The same demos recur across batches and across the No-CoT, CoT and fallback passes; a stored cache is
    copied and cropped to the overlap, and only the rest is run. New prefixes longer than the overlap by
    ``min_new`` tokens are stored (a dict the caller owns; it grows with the number of distinct demo blocks).
    """
    device = next(model.parameters()).device
    start, cache = 0, None
    if store:
        key = max(store, key=lambda k: common_prefix_length([list(k), ids]))
        overlap = min(common_prefix_length([list(key), ids]), len(ids))
        if overlap > 0:
            cache = copy.deepcopy(store[key])
            excess = cache.get_seq_length() - overlap
            if excess > 0:
                cache.crop(-excess)  # transformers 5 crops by a negative count of tokens to drop
            start = overlap
    if start < len(ids):
        out = model(input_ids=torch.tensor([ids[start:]], device=device), cache=cache, use_cache=True,
                    logits_to_keep=1)
        cache = out.past_key_values
    if store is not None and len(ids) - start >= min_new:
        store[tuple(ids)] = copy.deepcopy(cache)
    return cache


@torch.no_grad()
def prefill(model, rows: list[list[int]], pad_id: int, store: dict | None = None):
    """Run a batch of token-id lists; returns (last-position logits (B, V), cache, attention mask,
    next position ids (B,)). The shared prefix is computed once (or taken from ``store``)."""
    device = next(model.parameters()).device
    batch = len(rows)
    shared = min(common_prefix_length(rows), min(len(r) for r in rows) - 1)
    cache = None
    if shared > 0:
        cache = prefix_cache(model, rows[0][:shared], store)
        if batch > 1:
            cache.batch_repeat_interleave(batch)
    tails = [r[shared:] for r in rows]
    width = max(len(t) for t in tails)
    ids = torch.full((batch, width), pad_id, dtype=torch.long)
    tail_mask = torch.zeros((batch, width), dtype=torch.long)
    for i, tail in enumerate(tails):
        ids[i, width - len(tail):] = torch.tensor(tail)
        tail_mask[i, width - len(tail):] = 1
    mask = torch.cat([torch.ones((batch, shared), dtype=torch.long), tail_mask], dim=1).to(device)
    positions = (shared + tail_mask.cumsum(1) - 1).clamp(min=shared).to(device)
    out = model(input_ids=ids.to(device), attention_mask=mask, position_ids=positions, cache=cache,
                use_cache=True, logits_to_keep=1)
    return out.logits[:, -1].float(), out.past_key_values, mask, positions[:, -1] + 1


def grouped_batches(prompts: list[str], batch_size: int, groups: list | None = None) -> list[list[int]]:
    """Indices of ``prompts`` in batches that never mix groups (e.g. prompts with the same few-shot demos,
    whose shared prefix the cache then computes once), sorted by length within a group to limit padding."""
    groups = groups if groups is not None else [""] * len(prompts)
    if len(groups) != len(prompts):
        raise ValueError(f"{len(groups)} group keys for {len(prompts)} prompts")
    by_group: dict = {}
    for i, key in enumerate(groups):
        by_group.setdefault(key, []).append(i)
    batches = []
    for key in sorted(by_group, key=str):
        members = sorted(by_group[key], key=lambda i: (len(prompts[i]), prompts[i]))
        batches += [members[i:i + batch_size] for i in range(0, len(members), batch_size)]
    return batches


@torch.no_grad()
def score_next_token(model, tokenizer, prompts: list[str], token_ids: list[int], batch_size: int = 16,
                     desc: str = "scoring", groups: list | None = None, store: dict | None = None) -> np.ndarray:
    """Log-probabilities (N, len(token_ids)) of the given next tokens after each prompt (full softmax)."""
    pad = pad_id_of(tokenizer)
    result = np.zeros((len(prompts), len(token_ids)), dtype=np.float64)
    wanted = torch.tensor(token_ids)
    for batch in tqdm(grouped_batches(prompts, batch_size, groups), desc=desc, leave=False):
        rows = [tokenizer.encode(prompts[i], add_special_tokens=False) for i in batch]
        logits, *_ = prefill(model, rows, pad, store)
        logp = torch.log_softmax(logits, dim=-1)[:, wanted.to(logits.device)]
        result[batch] = logp.cpu().numpy()
    return result


ANSWER_GIVEN = re.compile(r"answer is:?\s*\*{0,2}\s*\(?[A-Za-z]\)", re.I)


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], max_new_tokens: int = 128, batch_size: int = 16,
             temperature: float = 0.0, seed: int = 0, stop_when: Callable[[str], bool] | None = None,
             desc: str = "generating", groups: list | None = None, store: dict | None = None,
             score_after: tuple[list[int], list[int]] | None = None):
    """Continuations of each prompt: greedy (temperature 0) or seeded sampling, with the KV cache.

    A row stops at an end-of-turn token, at ``max_new_tokens``, or once ``stop_when(text)`` is true
    (by default: once it has stated "answer is (X)", since nothing after that is scored).

    With ``score_after = (continuation ids, candidate ids)``, rows still running at ``max_new_tokens`` are
    fed the continuation through their cache and the candidates' log-probabilities are returned as well:
    ``(texts, scores)``, ``scores[i]`` None for rows that stopped earlier. This makes the parse-failure
    fallback of rambling CoTs nearly free.
    """
    stop_when = stop_when or (lambda text: ANSWER_GIVEN.search(text) is not None)
    pad = pad_id_of(tokenizer)
    eos = {t for t in (tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")) if isinstance(t, int)
           and t >= 0}
    generator = torch.Generator().manual_seed(seed)
    outputs: list[str] = [""] * len(prompts)
    scores: list = [None] * len(prompts)
    for batch in tqdm(grouped_batches(prompts, batch_size, groups), desc=desc, leave=False):
        rows = [tokenizer.encode(prompts[i], add_special_tokens=False) for i in batch]
        logits, cache, mask, positions = prefill(model, rows, pad, store)
        live = list(range(len(batch)))  # positions in `batch` still generating
        tokens: list[list[int]] = [[] for _ in batch]
        for step in range(max_new_tokens):
            if temperature > 0:
                probs = torch.softmax(logits / temperature, dim=-1).cpu()
                nxt = torch.multinomial(probs, 1, generator=generator)[:, 0]
            else:
                nxt = logits.argmax(-1).cpu()
            keep = []
            for j, row in enumerate(live):
                token = int(nxt[j])
                if token in eos:
                    continue
                tokens[row].append(token)
                if step % 4 == 3 and stop_when(tokenizer.decode(tokens[row])):
                    continue
                keep.append(j)
            if len(keep) < len(live) and keep:
                index = torch.tensor(keep, device=mask.device)
                cache.batch_select_indices(index)
                mask, positions, nxt = mask[index], positions[index], nxt[keep]
                live = [live[j] for j in keep]
            if not keep or step == max_new_tokens - 1:
                if keep and score_after is not None:  # ran out of tokens without stopping: score now
                    final = _score_continuation(model, cache, mask, positions, nxt, *score_after)
                    for j, row in enumerate(live):
                        scores[batch[row]] = final[j]
                break
            mask = torch.cat([mask, torch.ones((len(live), 1), dtype=mask.dtype, device=mask.device)], dim=1)
            out = model(input_ids=nxt[:, None].to(mask.device), attention_mask=mask, position_ids=positions[:, None],
                        cache=cache, use_cache=True)
            positions = positions + 1
            logits = out.logits[:, -1].float()
        for row, i in enumerate(batch):
            outputs[i] = tokenizer.decode(tokens[row], skip_special_tokens=True)
    return (outputs, scores) if score_after is not None else outputs


@torch.no_grad()
def _score_continuation(model, cache, mask, positions, last, continuation: list[int], candidates: list[int]):
    """Feed each row's last sampled token plus ``continuation``; log-probs of ``candidates`` after it."""
    device = mask.device
    feed = torch.cat([last[:, None], torch.tensor([continuation] * len(last), dtype=torch.long)], dim=1).to(device)
    width = feed.shape[1]
    mask = torch.cat([mask, torch.ones((len(last), width), dtype=mask.dtype, device=device)], dim=1)
    pos = positions[:, None] + torch.arange(width, device=device)[None]
    out = model(input_ids=feed, attention_mask=mask, position_ids=pos, cache=cache, use_cache=True, logits_to_keep=1)
    logp = torch.log_softmax(out.logits[:, -1].float(), dim=-1)[:, torch.tensor(candidates, device=device)]
    return logp.cpu().numpy()
