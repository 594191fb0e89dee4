"""Importance recovery (where the truth is known) and fidelity of explanations."""

from __future__ import annotations

import numpy as np


def normalise(b: np.ndarray) -> np.ndarray:
    """b / sum|b| along the last axis (all-zero rows stay zero)."""
    b = np.asarray(b, float)
    total = np.abs(b).sum(-1, keepdims=True)
    return b / np.where(total > 0, total, 1.0)


def importance_cindex(truth: np.ndarray, pred: np.ndarray) -> float:
    """Share of feature pairs with different true importance that ``pred`` orders the same way
    (a prediction tie counts 1/2), as lifelines' concordance index with every 'event' observed."""
    num = den = 0.0
    for i in range(len(truth)):
        for j in range(len(truth)):
            if truth[i] > truth[j]:
                den += 1
                num += 1.0 if pred[i] > pred[j] else 0.5 if pred[i] == pred[j] else 0.0
    return num / den if den else float("nan")


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    if np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def importance_scores(truth: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """MSE, C-index and Pearson r between normalised true and predicted importances (one instance)."""
    t, p = normalise(truth), normalise(pred)
    return {"mse": float(np.mean((t - p) ** 2)), "cindex": importance_cindex(t, p), "pearson": pearson(t, p)}


def survival_distance(s_bb: np.ndarray, s_ex: np.ndarray, grid: np.ndarray, weights=None) -> float:
    """Delta-t weighted squared difference of step survival functions on ``grid``, divided by the time
    span: the mean squared gap over time (0 = identical, at most 1). Weighted mean over rows."""
    s_bb, s_ex = np.atleast_2d(s_bb), np.atleast_2d(s_ex)
    dt = np.diff(grid, append=grid[-1])
    per_row = ((s_bb - s_ex) ** 2 * dt).sum(-1) / max(grid[-1] - grid[0], 1e-12)
    w = np.ones(len(per_row)) if weights is None else np.asarray(weights, float)
    return float((per_row * w).sum() / w.sum())
