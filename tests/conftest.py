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
