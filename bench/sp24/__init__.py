"""The pieces of ``bench/sparse24.py``, the 2:4 sparse-GEMM benchmark (issue 3)."""
