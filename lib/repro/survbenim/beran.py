"""The Beran estimator in torch: a kernel-weighted Kaplan–Meier, differentiable in the weights.

Training data are (x_i, t_i, delta_i). For a query z with normalised weights alpha_i(z) (summing to 1),

    S(t | z) = prod_{u_j <= t} (1 - D_j(z) / R_j(z)),
    D_j = sum_{i: t_i = u_j, delta_i = 1} alpha_i,   R_j = sum_{i: t_i >= u_j} alpha_i,

over the distinct times u_j. With equal weights this is exactly Kaplan–Meier, tied times included
(a censored time tied with an event time counts as still at risk, as Kaplan–Meier assumes).
Memory is O(n_query x n_train): the kernel is accumulated one feature at a time, never as an
n_query x n_train x d tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def check_survival_data(X, times, events, name: str = "training data") -> tuple[np.ndarray, ...]:
    """Validate and convert (X, times, events); raise ValueError naming what is wrong and what is allowed."""
    X = np.asarray(X, dtype=float)
    times = np.asarray(times, dtype=float)
    events = np.asarray(events)
    if X.ndim != 2:
        raise ValueError(f"{name}: X must be a 2-D array (n_samples, n_features), got shape {X.shape}")
    if times.ndim != 1 or events.ndim != 1:
        raise ValueError(f"{name}: times and events must be 1-D, got shapes {times.shape} and {events.shape}")
    if not (len(X) == len(times) == len(events)):
        raise ValueError(f"{name}: X, times and events must have the same length, "
                         f"got {len(X)}, {len(times)} and {len(events)}")
    if len(X) == 0:
        raise ValueError(f"{name}: at least one sample is required, got 0")
    if not np.all(np.isfinite(X)):
        raise ValueError(f"{name}: X contains NaN or infinite values; only finite numbers are allowed")
    if not np.all(np.isfinite(times)) or np.any(times < 0):
        raise ValueError(f"{name}: times must be finite and non-negative (>= 0), "
                         f"got minimum {np.nanmin(times):g}")
    uniq = set(np.unique(events).tolist())
    if not uniq <= {0, 1}:
        raise ValueError(f"{name}: events must be 0 (censored) or 1 (event), got values {sorted(uniq)}")
    return X, times, events.astype(bool)


def check_instances(Z, n_features: int, name: str = "instance") -> np.ndarray:
    """A 1-D instance or a 2-D batch with n_features finite columns (returned as 2-D)."""
    Z = np.asarray(Z, dtype=float)
    Z2 = Z[None, :] if Z.ndim == 1 else Z
    if Z2.ndim != 2 or Z2.shape[1] != n_features:
        raise ValueError(f"{name}: expected {n_features} features per instance, got shape {Z.shape}")
    if not np.all(np.isfinite(Z2)):
        raise ValueError(f"{name}: contains NaN or infinite values; only finite numbers are allowed")
    return Z2


@dataclass
class SurvivalTable:
    """Training times prepared for the Beran estimator: the time order and where each distinct time's
    block of samples ends in that order."""

    order: torch.Tensor | None  # (n,) argsort of the times; None when the samples are already sorted
    events: torch.Tensor  # (n,) 0/1 event flags, in time order
    ends: torch.Tensor  # (m,) index (in time order) of the last sample of each distinct time
    unique_times: torch.Tensor  # (m,) sorted distinct times

    @classmethod
    def from_arrays(cls, times, events) -> SurvivalTable:
        times, events = np.asarray(times, dtype=float), np.asarray(events, dtype=float)
        order = np.argsort(times, kind="stable")
        sorted_times = times[order]
        unique, counts = np.unique(sorted_times, return_counts=True)
        is_sorted = bool(np.all(order == np.arange(len(order))))
        return cls(None if is_sorted else torch.as_tensor(order), torch.as_tensor(events[order]),
                   torch.as_tensor(np.cumsum(counts) - 1), torch.as_tensor(unique))


def beran_survival(weights: torch.Tensor, table: SurvivalTable) -> torch.Tensor:
    """S(u_j | z) at every distinct training time, shape (..., m), from weights (..., n) summing to 1.

    In time order, cumulative sums of alpha and of alpha * delta read at the end of each distinct time's
    block give R_j = 1 - (weight before u_j) and D_j = (event weight at u_j): no n x m matrix is formed.
    """
    if table.order is not None:
        weights = weights.index_select(-1, table.order)
    mass = weights.cumsum(-1).index_select(-1, table.ends)
    event_mass = (weights * table.events.to(weights)).cumsum(-1).index_select(-1, table.ends)
    before = torch.cat([torch.zeros_like(mass[..., :1]), mass[..., :-1]], -1)
    deaths = torch.cat([event_mass[..., :1], event_mass[..., 1:] - event_mass[..., :-1]], -1)
    at_risk = weights.sum(-1, keepdim=True) - before  # weight of all samples with t_i >= u_j
    hazard = (deaths / at_risk.clamp_min(1e-12)).clamp(0.0, 1.0)
    return torch.cumprod(1.0 - hazard, dim=-1)


def log_kernel(queries: torch.Tensor, train: torch.Tensor, importance: torch.Tensor, tau: float,
               distance: str = "square") -> torch.Tensor:
    """-tau * mean_k b_k(z) g(z_k - x_ik), shape (..., B, n), accumulated feature by feature.

    queries (..., B, d), train (n, d), importance (..., B, d) >= 0; g = square or abs.
    """
    d = queries.shape[-1]
    out = None
    for k in range(d):
        diff = queries[..., k:k + 1] - train[:, k]  # (..., B, n): one feature at a time
        term = importance[..., k:k + 1] * (diff.square() if distance == "square" else diff.abs())
        out = term if out is None else out + term
    return -tau * out / d


def kernel_weights(queries, train, importance, tau: float, distance: str = "square") -> torch.Tensor:
    """Normalised kernel weights alpha_i(z) = K(z, x_i) / sum_j K(z, x_j) (a softmax over training points)."""
    return torch.softmax(log_kernel(queries, train, importance, tau, distance), dim=-1)


def nelson_aalen(table: SurvivalTable) -> torch.Tensor:
    """Nelson–Aalen cumulative hazard H0(u_j) at the distinct training times, shape (m,)."""
    n = len(table.events)
    at_risk = n - torch.cat([torch.zeros(1, dtype=torch.long), table.ends[:-1] + 1])
    events_cum = table.events.to(torch.float64).cumsum(0).index_select(0, table.ends)
    deaths = torch.cat([events_cum[:1], events_cum[1:] - events_cum[:-1]])
    return torch.cumsum(deaths / at_risk, 0)
