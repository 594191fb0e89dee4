"""Test configuration shared by the whole suite."""

import os

# Triton reads TRITON_INTERPRET when a @triton.jit module is imported, so it must be set before any
# kernel module is imported: on a machine without a CUDA GPU the kernels run in Triton's interpreter.
try:
    import torch

    _has_cuda = torch.cuda.is_available()
except ImportError:  # pragma: no cover - torch is a hard dependency
    _has_cuda = False
if not _has_cuda:
    os.environ.setdefault("TRITON_INTERPRET", "1")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    """An empty asset cache, so tests never touch the user's real one."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("REPRO_CACHE", str(cache))
    return cache


@pytest.fixture(scope="session")
def make_tiny_llama():
    """A factory for small random Llama models (2 layers, 4 heads, 2 key/value heads), seeded."""

    def make(vocab_size: int, hidden_size: int, intermediate_size: int, max_positions: int = 64, seed: int = 0):
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(seed)
        config = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                             max_position_embeddings=max_positions)
        return LlamaForCausalLM(config).eval()

    return make
