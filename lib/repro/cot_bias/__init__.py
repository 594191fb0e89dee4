"""Turpin et al. (2023), unfaithful chain-of-thought: biased prompts on BIG-Bench Hard and BBQ.

Modules: ``tasks`` (the 13 BBH tasks from BIG-bench JSON, the web_of_lies generator), ``prompts`` (the
paper's templates, Suggested Answer and Answer-is-Always-A), ``engine`` (batched scoring and generation
with a shared-prefix KV cache), ``parsing`` (answer parser, bias-mention detector), ``metrics`` (accuracy
splits, the paired bias shift with its t-test, calibration), ``bbq`` (weak-evidence pairs), ``experiment``
(the grid of biases × settings).
"""

from . import bbq, engine, experiment, metrics, paper, parsing, prompts, tasks

__all__ = ["bbq", "engine", "experiment", "metrics", "paper", "parsing", "prompts", "tasks"]
