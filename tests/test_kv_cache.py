"""repro.kv_cache: the spare-capacity KV cache gives bit-for-bit the logits of transformers' DynamicCache."""

import copy

import pytest
import torch
from transformers.cache_utils import DynamicCache

from repro.kv_cache import SpareCapacityCache


@pytest.fixture(scope="module")
def tiny_llama(make_tiny_llama):
    return make_tiny_llama(64, 32, 64, max_positions=1024)


@torch.no_grad()
def run_script(model, cache):
    """Prefill, repeat over a batch, decode past the first capacity, crop, drop rows, copy: every logit seen."""
    torch.manual_seed(1)
    prefix = torch.randint(0, 64, (1, 40))
    seen = []
    out = model(input_ids=prefix, cache=cache, use_cache=True)
    cache = out.past_key_values
    seen.append(out.logits)
    cache.batch_repeat_interleave(3)
    tails = torch.randint(0, 64, (3, 5))
    out = model(input_ids=tails, cache=cache, use_cache=True)
    seen.append(out.logits)
    token = out.logits[:, -1].argmax(-1, keepdim=True)
    for step in range(150):  # 45 + 150 tokens: beyond the first buffer (45 + 64), so the buffer grows
        out = model(input_ids=token, cache=cache, use_cache=True)
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        seen.append(out.logits)
        if step == 70:
            cache.crop(-10)
        if step == 100:
            cache.batch_select_indices(torch.tensor([0, 2]))
            token = token[[0, 2]]
    snapshot = copy.deepcopy(cache)
    length = cache.get_seq_length()
    out = model(input_ids=token, cache=cache, use_cache=True)
    seen.append(out.logits)
    out = model(input_ids=token, cache=snapshot, use_cache=True)  # the copy is unaffected by the step above
    seen.append(out.logits)
    return seen, length


def test_spare_capacity_cache_matches_dynamic_cache_bit_for_bit(tiny_llama):
    reference, ref_length = run_script(tiny_llama, DynamicCache())
    ours, length = run_script(tiny_llama, SpareCapacityCache())
    assert length == ref_length == 40 + 5 + 150 - 10
    assert len(ours) == len(reference)
    for a, b in zip(reference, ours):
        assert torch.equal(a, b)
    assert torch.equal(ours[-1], ours[-2])


def test_appending_copies_only_the_new_tokens():
    cache = SpareCapacityCache()
    keys = torch.randn(2, 3, 10, 4)
    cache.update(keys, keys + 1, 0)
    buffer = cache.layers[0].key_buffer
    assert buffer.shape[-2] > 10  # spare room left after the first write
    cache.update(torch.randn(2, 3, 1, 4), torch.randn(2, 3, 1, 4), 0)
    assert cache.layers[0].key_buffer is buffer  # the next token went into that room: no reallocation
    assert cache.get_seq_length() == 11 and torch.equal(cache.layers[0].keys[..., :10, :], keys)


def test_crop_rejects_a_positive_count():
    cache = SpareCapacityCache()
    cache.update(torch.randn(1, 1, 4, 2), torch.randn(1, 1, 4, 2), 0)
    with pytest.raises(ValueError, match="negative number of tokens"):
        cache.layers[0].crop(2)
    assert cache.get_seq_length() == 4
