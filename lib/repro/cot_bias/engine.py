"""Batched scoring and generation with a causal LM, computing each shared prompt prefix once.

Prompts share long prefixes: the chat header and, few-shot, all the demos (a whole group); an item's
unbiased and biased prompts also share its question. ``plan_batches`` sorts a group's prompts by token
ids and cuts them into prefill batches that run as few tokens as possible. A batch's prefix is run once
(the group's part kept in a store across batches and passes), its cache repeated over the batch, and only
the differing tails are run, left-padded *after* the prefix; explicit position ids keep every real token
at its true position. Generation joins several prefilled batches (caches left-padded to one length) and
continues token by token, dropping rows as they finish. Caches are ``SpareCapacityCache``s, which append
a token without copying the whole cache.
"""

from __future__ import annotations

import copy
import re
import sys
from typing import Callable, NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from ..kv_cache import SpareCapacityCache, stack_left_padded
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
    start, cache = 0, SpareCapacityCache()
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


class Batch(NamedTuple):
    """Prompts run in one prefill pass: their indices, the tokens they share with their whole group (kept
    in the prefix store) and the tokens they share with each other (run once for the batch)."""

    indices: list[int]
    stored: int
    prefix: int


CPU_CALL_COST = 48  # measured: ~0.15 s of fixed work per pass against ~320 tokens/s (SmolLM2-135M, 2 cores)


def call_cost_tokens(device) -> int:
    """How many prompt tokens cost as much as one more forward pass: measured on CPU. A GPU runs a few
    thousand tokens in about the time of one, so there the plan splits a batch only for long shared
    questions (an estimate)."""
    return CPU_CALL_COST if torch.device(device).type == "cpu" else 2048


def plan_batches(rows: list[list[int]], batch_size: int, groups: list | None = None,
                 call_cost: int = CPU_CALL_COST) -> list[Batch]:
    """Prefill batches that never mix groups (e.g. prompts with the same few-shot demos) and run as few
    tokens as possible.

    Within a group, rows sorted by token ids put prompts that share a long prefix side by side (an item's
    unbiased and biased prompts differ only at the end). The sorted rows are cut into runs of at most
    ``batch_size`` by dynamic programming, a run costing its shared prefix beyond the group's once, every
    row's tail padded to the longest, and ``call_cost`` tokens per forward pass.
    """
    groups = groups if groups is not None else [""] * len(rows)
    if len(groups) != len(rows):
        raise ValueError(f"{len(groups)} group keys for {len(rows)} prompts")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    by_group: dict = {}
    for i, key in enumerate(groups):
        by_group.setdefault(key, []).append(i)
    batches = []
    for key in sorted(by_group, key=str):
        members = sorted(by_group[key], key=lambda i: rows[i])
        member_rows = [rows[i] for i in members]
        stored = max(min(common_prefix_length(member_rows), min(len(r) for r in member_rows) - 1), 0)
        for start, end, prefix in _cheapest_runs(member_rows, stored, batch_size, call_cost):
            batches.append(Batch(members[start:end], stored, prefix))
    return batches


def _run_cost(count: int, longest: int, shared: int, stored: int, call_cost: int) -> tuple[int, int]:
    """(tokens, prefix) of the cheaper way to run a batch: tails after the stored prefix, or its shared
    prefix once in an extra pass and shorter tails."""
    plain = count * (longest - stored) + call_cost
    extended = (shared - stored) + count * (longest - shared) + 2 * call_cost
    return (extended, shared) if shared > stored and extended < plain else (plain, stored)


def _cheapest_runs(rows: list[list[int]], stored: int, batch_size: int, call_cost: int):
    """Cut sorted ``rows`` into consecutive runs of minimal total cost: (start, end, prefix) triples.
    The shared prefix of a sorted run is the smallest shared prefix of neighbours in it."""
    n = len(rows)
    neighbours = [common_prefix_length([rows[k], rows[k + 1]]) for k in range(n - 1)]
    best, choice = [0] + [None] * n, [None] * (n + 1)
    for end in range(1, n + 1):
        longest, shortest, shared = 0, sys.maxsize, sys.maxsize
        for start in range(end - 1, max(end - batch_size, 0) - 1, -1):
            longest, shortest = max(longest, len(rows[start])), min(shortest, len(rows[start]))
            if start < end - 1:
                shared = min(shared, neighbours[start])
            # at least ``stored``: every row of the group shares that much, with a token left over
            tokens, prefix = _run_cost(end - start, longest, min(shortest - 1, shared), stored, call_cost)
            if best[end] is None or best[start] + tokens < best[end]:
                best[end], choice[end] = best[start] + tokens, (start, prefix)
    runs, end = [], n
    while end > 0:
        start, prefix = choice[end]
        runs.append((start, end, prefix))
        end = start
    return runs[::-1]


@torch.no_grad()
def prefill(model, rows: list[list[int]], pad_id: int, store: dict | None = None, prefix: int | None = None,
            stored: int | None = None):
    """Run a batch of token-id lists; returns (last-position logits (B, V), cache, attention mask,
    next position ids (B,)).

    The first ``prefix`` tokens (default: all the rows share) are run once: the first ``stored`` of them
    (default: all) come from, or go into, ``store``; the rest extend a copy. The tails are left-padded
    after the prefix, and explicit position ids keep every real token at its true position."""
    device = next(model.parameters()).device
    batch = len(rows)
    shared = min(common_prefix_length(rows), min(len(r) for r in rows) - 1)
    prefix = shared if prefix is None else prefix
    stored = prefix if stored is None else min(stored, prefix)
    if not 0 <= prefix <= shared:
        raise ValueError(f"prefix must be between 0 and the {shared} tokens the rows share, got {prefix}")
    cache = SpareCapacityCache()
    if stored > 0:
        cache = prefix_cache(model, rows[0][:stored], store)
    if prefix > stored:
        model(input_ids=torch.tensor([rows[0][stored:prefix]], device=device), cache=cache, use_cache=True,
              logits_to_keep=1)
    if prefix > 0 and batch > 1:
        cache.batch_repeat_interleave(batch)
    tails = [r[prefix:] for r in rows]
    width = max(len(t) for t in tails)
    ids = torch.full((batch, width), pad_id, dtype=torch.long)
    tail_mask = torch.zeros((batch, width), dtype=torch.long)
    for i, tail in enumerate(tails):
        ids[i, width - len(tail):] = torch.tensor(tail)
        tail_mask[i, width - len(tail):] = 1
    mask = torch.cat([torch.ones((batch, prefix), dtype=torch.long), tail_mask], dim=1).to(device)
    positions = (prefix + tail_mask.cumsum(1) - 1).clamp(min=prefix).to(device)
    out = model(input_ids=ids.to(device), attention_mask=mask, position_ids=positions, cache=cache,
                use_cache=True, logits_to_keep=1)
    return out.logits[:, -1].float(), out.past_key_values, mask, positions[:, -1] + 1


def join_prefilled(states: list[tuple]):
    """Several ``prefill`` results as one batch for decoding: caches and masks left-padded to the longest.
    Decoding then runs every row in one pass per token, whatever batch it was prefilled in."""
    if len(states) == 1:
        return states[0]
    logits, caches, masks, positions = zip(*states)
    width = max(m.shape[1] for m in masks)
    mask = torch.cat([torch.nn.functional.pad(m, (width - m.shape[1], 0)) for m in masks])
    return torch.cat(logits), stack_left_padded(list(caches)), mask, torch.cat(positions)


def decode_chunks(batches: list[Batch], batch_size: int) -> list[list[Batch]]:
    """Consecutive prefill batches packed into chunks of at most ``batch_size`` rows, decoded together."""
    chunks: list[list[Batch]] = []
    rows = 0
    for b in batches:
        if not chunks or rows + len(b.indices) > batch_size:
            chunks.append([])
            rows = 0
        chunks[-1].append(b)
        rows += len(b.indices)
    return chunks


@torch.no_grad()
def score_next_token(model, tokenizer, prompts: list[str], token_ids: list[int], batch_size: int = 16,
                     desc: str = "scoring", groups: list | None = None, store: dict | None = None) -> np.ndarray:
    """Log-probabilities (N, len(token_ids)) of the given next tokens after each prompt (full softmax)."""
    pad = pad_id_of(tokenizer)
    result = np.zeros((len(prompts), len(token_ids)), dtype=np.float64)
    wanted = torch.tensor(token_ids)
    rows = [tokenizer.encode(p, add_special_tokens=False) for p in prompts]
    cost = call_cost_tokens(next(model.parameters()).device)
    for b in tqdm(plan_batches(rows, batch_size, groups, cost), desc=desc, leave=False):
        logits, *_ = prefill(model, [rows[i] for i in b.indices], pad, store, b.prefix, b.stored)
        logp = torch.log_softmax(logits, dim=-1)[:, wanted.to(logits.device)]
        result[b.indices] = logp.cpu().numpy()
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
    rows = [tokenizer.encode(p, add_special_tokens=False) for p in prompts]
    plan = plan_batches(rows, batch_size, groups, call_cost_tokens(next(model.parameters()).device))
    for chunk in tqdm(decode_chunks(plan, batch_size), desc=desc, leave=False):
        states = [prefill(model, [rows[i] for i in b.indices], pad, store, b.prefix, b.stored) for b in chunk]
        logits, cache, mask, positions = join_prefilled(states)
        batch = [i for b in chunk for i in b.indices]
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
