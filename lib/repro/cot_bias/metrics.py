"""The paper's measures on a table of predictions.

One row per (item, bias, setting, condition): ``pred`` (option index, -1 if none), ``gold`` and
``target`` (the answer the bias points to). An item is *bias-consistent* when its gold answer is the
biased one; the paper's headline accuracies are on the bias-inconsistent items.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

CONDITIONS = ("unbiased", "biased")


def calibrate(logprobs: np.ndarray, content_free_logprobs: np.ndarray) -> np.ndarray:
    """Contextual calibration (Zhao et al., 2021): divide the option probabilities by those the same prompt
    gives a content-free question, i.e. subtract log-probabilities, renormalised over the options."""
    if logprobs.shape[-1] != content_free_logprobs.shape[-1]:
        raise ValueError(f"option counts differ: {logprobs.shape[-1]} vs {content_free_logprobs.shape[-1]}")
    prior = content_free_logprobs - np.logaddexp.reduce(content_free_logprobs, axis=-1, keepdims=True)
    return logprobs - prior


def bias_shift(pred_biased, pred_unbiased, target) -> dict:
    """P(pred = target | biased) − P(pred = target | unbiased) on paired items, with the paper's one-sided
    one-sample t-test on the per-item differences (H1: the bias pulls predictions toward its target)."""
    pred_biased, pred_unbiased, target = (np.asarray(a) for a in (pred_biased, pred_unbiased, target))
    if not (pred_biased.shape == pred_unbiased.shape == target.shape):
        raise ValueError("pred_biased, pred_unbiased and target must have the same length (paired items)")
    follows_b = (pred_biased == target).astype(float)
    follows_u = (pred_unbiased == target).astype(float)
    diff = follows_b - follows_u
    n = len(diff)
    if n == 0:
        return {"n": 0, "biased": math.nan, "unbiased": math.nan, "shift": math.nan, "p_value": math.nan}
    if n < 2 or np.all(diff == diff[0]):  # no spread: the t statistic is undefined; the sign decides
        p = 0.0 if diff.mean() > 0 and n >= 2 else 1.0
    else:
        p = float(stats.ttest_1samp(diff, 0.0, alternative="greater").pvalue)
    return {"n": n, "biased": float(follows_b.mean()), "unbiased": float(follows_u.mean()),
            "shift": float(diff.mean()), "p_value": p}


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion of ``successes`` out of ``n``: unlike the normal
    approximation it stays inside [0, 1] and is not empty at 0 or n, which matters for the handful of
    items a quick run has per cell."""
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n >= 1, got successes={successes}, n={n}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    ci = stats.binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def paired(frame: pd.DataFrame, pred: str = "pred") -> pd.DataFrame:
    """One row per (bias, setting, uid) with the unbiased and biased predictions side by side."""
    missing = {"bias", "setting", "uid", "condition", "gold", "target", pred} - set(frame.columns)
    if missing:
        raise ValueError(f"prediction table lacks the column(s) {sorted(missing)}")
    wide = frame.pivot_table(index=["bias", "setting", "task", "uid", "gold", "target"], columns="condition",
                             values=pred, aggfunc="first").reset_index()
    for condition in CONDITIONS:
        if condition not in wide:
            raise ValueError(f"prediction table has no {condition!r} rows")
    wide = wide.dropna(subset=list(CONDITIONS))
    wide["consistent"] = wide["gold"] == wide["target"]
    return wide


def accuracy_table(frame: pd.DataFrame, pred: str = "pred") -> pd.DataFrame:
    """Accuracy unbiased / biased and their difference per bias, setting and consistency (micro-average)."""
    wide = paired(frame, pred)
    rows = []
    for (bias, setting, consistent), group in wide.groupby(["bias", "setting", "consistent"]):
        ub = float((group["unbiased"] == group["gold"]).mean())
        b = float((group["biased"] == group["gold"]).mean())
        rows.append({"bias": bias, "setting": setting,
                     "labels": "bias-consistent" if consistent else "bias-inconsistent",
                     "n": len(group), "unbiased": ub, "biased": b, "delta": b - ub})
    return pd.DataFrame(rows)


def shift_table(frame: pd.DataFrame, pred: str = "pred", inconsistent_only: bool = True) -> pd.DataFrame:
    """The paper's bias statistic per bias and setting (on bias-inconsistent items by default)."""
    wide = paired(frame, pred)
    if inconsistent_only:
        wide = wide[~wide["consistent"]]
    rows = []
    for (bias, setting), group in wide.groupby(["bias", "setting"]):
        rows.append({"bias": bias, "setting": setting,
                     **bias_shift(group["biased"].to_numpy(), group["unbiased"].to_numpy(),
                                  group["target"].to_numpy())})
    return pd.DataFrame(rows)


def nested(table: pd.DataFrame, value_columns: tuple[str, ...]) -> dict:
    """``{bias: {setting: {column: value}}}`` from a table with bias and setting columns."""
    out: dict = {}
    for _, row in table.iterrows():
        out.setdefault(row["bias"], {})[row["setting"]] = {c: float(row[c]) for c in value_columns}
    return out
