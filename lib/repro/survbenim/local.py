"""Local explanations around one instance: neighbours, SurvLIME (a Cox surrogate), SurvSHAP(t).

SurvLIME and SurvSHAP(t) are written here from their papers' definitions (small, exact, tested),
rather than taken from ``survlimepy`` / ``survshap``, whose pinned dependencies clash with this book's.
"""

from __future__ import annotations

from itertools import combinations
from math import factorial

import numpy as np


def neighbours(x: np.ndarray, scale: np.ndarray, n: int, radius: float, rng: np.random.Generator
               ) -> tuple[np.ndarray, np.ndarray]:
    """n Gaussian perturbations of x (std radius * scale per feature) and their SurvLIME weights
    w = exp(-d^2 / (2 radius^2)), d the scale-standardised distance to x."""
    z = x + radius * scale * rng.standard_normal((n, len(x)))
    d2 = (((z - x) / scale) ** 2).sum(1)
    return z, np.exp(-d2 / (2 * radius ** 2))


def survlime(z: np.ndarray, w: np.ndarray, s_bb: np.ndarray, h0: np.ndarray, dt: np.ndarray,
             ridge: float = 1e-6) -> np.ndarray:
    """Cox coefficients b minimising sum_i w_i sum_j dt_j v_ij^2 (ln H_bb(t_j|z_i) - ln H0(t_j) - b^T z_i)^2.

    v_ij = S_bb H_bb is the first-order factor between log-hazard and survival-function differences
    (dS = -S H dlnH), so the objective approximates the survival distance. It is a weighted least-squares
    problem with a closed-form solution. The intercept is absorbed into ln H0, as in SurvLIME.
    """
    s = np.clip(s_bb, 1e-6, 1 - 1e-6)
    H = -np.log(s)
    ok = h0 > 0
    y = np.log(H[:, ok]) - np.log(h0[ok])  # (B, m')
    v = s[:, ok] * H[:, ok]
    weight = w[:, None] * dt[ok] * v ** 2  # (B, m')
    A = np.einsum("bj,bk,bl->kl", weight, z, z) + ridge * np.eye(z.shape[1])
    rhs = np.einsum("bj,bk,bj->k", weight, z, y)
    return np.linalg.solve(A, rhs)


def cox_survival(z: np.ndarray, b: np.ndarray, h0: np.ndarray) -> np.ndarray:
    return np.exp(-h0 * np.exp(np.clip(z @ b, -30, 30))[:, None])


def shapley_weights(d: int) -> dict[int, float]:
    return {s: factorial(s) * factorial(d - s - 1) / factorial(d) for s in range(d)}


def survshap(predict, x: np.ndarray, background: np.ndarray, max_features: int = 12
             ) -> tuple[np.ndarray, np.ndarray]:
    """Exact SurvSHAP(t): phi_k(t) for every feature, with the interventional value function
    v(S)(t) = mean over background rows of S_bb(t | x_S, background_{not S}).

    ``predict(X) -> (n, m)`` survival functions. Returns (phi (d, m), v(empty set) (m,)); by the
    efficiency axiom v(empty) + sum_k phi_k = S_bb(t | x). Cost: 2^d x len(background) predictions.
    """
    d = len(x)
    if d > max_features:
        raise ValueError(f"exact SurvSHAP(t) needs 2^d coalitions; d = {d} exceeds max_features={max_features}")
    masks = np.array([[(m >> k) & 1 for k in range(d)] for m in range(2 ** d)], dtype=bool)
    rows = np.where(masks[:, None, :], x, background[None])  # (2^d, n_bg, d)
    values = predict(rows.reshape(-1, d)).reshape(2 ** d, len(background), -1).mean(1)  # (2^d, m)
    index = {tuple(m): i for i, m in enumerate(masks)}
    weight = shapley_weights(d)
    phi = np.zeros((d, values.shape[1]))
    for k in range(d):
        others = [j for j in range(d) if j != k]
        for size in range(d):
            for subset in combinations(others, size):
                m = np.zeros(d, dtype=bool)
                m[list(subset)] = True
                without = values[index[tuple(m)]]
                m[k] = True
                phi[k] += weight[size] * (values[index[tuple(m)]] - without)
    return phi, values[0]
