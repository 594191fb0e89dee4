"""What every chapter does at its top and bottom: validate parameters, seed, time, record.

Used as::

    chapter = repro.notebook.setup("00_toolbox", globals())   # right after the parameters cell
    ...
    chapter.record(metrics={...}, paper={...}, headline="...")  # last cell
"""

from __future__ import annotations

import inspect
import logging
import os
import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from . import params as params_mod
from . import results

NOTEBOOKS_DIR = results.REPO_ROOT / "notebooks"


def seed_everything(seed: int) -> None:
    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    try:
        import torch
    except ImportError:
        return
    torch.manual_seed(seed)


def quiet_libraries() -> None:
    """Keep the rendered pages free of library chatter that says nothing about the experiment."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    for name in ("transformers", "datasets", "sentence_transformers", "huggingface_hub"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    try:
        import datasets

        datasets.disable_progress_bars()
    except ImportError:
        pass


@dataclass
class Chapter:
    slug: str
    params: dict
    started: float = field(default_factory=time.perf_counter)

    @property
    def profile(self) -> str:
        return self.params.get("profile", "quick")

    @property
    def seed(self) -> int | None:
        return self.params.get("seed")

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def record(self, metrics: dict, paper: dict | None = None, headline: str | None = None) -> Path:
        return results.record(self.slug, self.profile, self.params, self.seed, self.elapsed(),
                              metrics, paper, headline)


def setup(slug: str, namespace: dict, notebook: Path | None = None) -> Chapter:
    """Read this chapter's parameter values from ``namespace`` (the notebook's globals()), check
    their types against the parameters cell, seed every generator, quiet library logs, style plots."""
    if notebook is None:  # papermill runs chapters with cwd = their folder; fall back to the repo's
        local = Path.cwd() / f"{slug}.md"
        notebook = local if local.is_file() else NOTEBOOKS_DIR / f"{slug}.md"
    declared = params_mod.notebook_parameters(notebook)
    missing = [n for n in declared if n not in namespace]
    if missing:
        raise params_mod.ParameterError(f"{slug}: parameters {missing} are not defined in the notebook")
    values = params_mod.resolve(declared, {n: namespace[n] for n in declared}, slug)
    quiet_libraries()
    if "seed" in values:
        seed_everything(values["seed"])
    from . import plotting

    plotting.use_house_style()
    import pandas as pd

    pd.set_option("display.max_colwidth", None)
    pd.set_option("display.precision", 4)
    return Chapter(slug, values)


def show(obj) -> None:
    """Display the source of a library function or class in the notebook, syntax-highlighted."""
    from IPython.display import Markdown, display

    source = inspect.getsource(obj)
    module = inspect.getmodule(obj).__name__
    display(Markdown(f"`{module}.{obj.__qualname__}`\n\n```python\n{source}```"))
