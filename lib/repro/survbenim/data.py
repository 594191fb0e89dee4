"""Survival datasets for the SurvBeNIM chapter: synthetic data with known importances, real bundled data.

Every loader returns a ``SurvivalData``: features scaled to [0, 1] (min-max on the whole set, as the
official repository does), times, event flags, feature names and where the data come from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd


@dataclass
class SurvivalData:
    X: np.ndarray
    times: np.ndarray
    events: np.ndarray
    features: list[str]
    source: str
    truth: np.ndarray | None = None  # per-sample true importance (n, d), where known
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.times)

    def split(self, test_fraction: float, rng: np.random.Generator) -> tuple[SurvivalData, SurvivalData]:
        order = rng.permutation(len(self))
        n_test = int(round(test_fraction * len(self)))
        return self.subset(order[n_test:]), self.subset(order[:n_test])

    def subset(self, idx) -> SurvivalData:
        truth = None if self.truth is None else self.truth[idx]
        return SurvivalData(self.X[idx], self.times[idx], self.events[idx], self.features, self.source,
                            truth, {**self.extra, "index": np.asarray(idx)})


def minmax(X: np.ndarray) -> np.ndarray:
    lo, hi = X.min(0), X.max(0)
    return (X - lo) / np.where(hi > lo, hi - lo, 1.0)


def censor(times: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Censor a random ``fraction`` of the samples at U(0.1, 0.9) times their event time."""
    events = np.ones(len(times), dtype=bool)
    chosen = rng.permutation(len(times))[: int(round(fraction * len(times)))]
    events[chosen] = False
    times = times.copy()
    times[chosen] *= rng.uniform(0.1, 0.9, len(chosen))
    return times, events


def cox_clusters(n_per_cluster: int = 200, n_features: int = 5, censored: float = 0.2,
                 noise: str = "random", lam: float = 1e-5, shape: float = 2.0,
                 rng: np.random.Generator | None = None) -> SurvivalData:
    """Two clusters of Weibull–Cox data with different coefficients (the paper's synthetic set).

    Cluster 1: x ~ U[0, 1]^d with beta = (0.5, 0.25, 0.12, 0, ...); cluster 2: x ~ U[1, 2]^d with the
    reversed beta. T = (-ln U / (lam exp(beta^T x)))^(1/shape); ``noise='random'`` draws U ~ U(0, 1),
    ``'median'`` fixes U = 0.5 (the official repository's deterministic times).
    """
    if noise not in ("random", "median"):
        raise ValueError(f"noise must be 'random' or 'median', got {noise!r}")
    if n_features < 3:
        raise ValueError(f"n_features must be >= 3 (three non-zero coefficients), got {n_features}")
    rng = rng or np.random.default_rng(0)
    beta = np.zeros(n_features)
    beta[:3] = [0.5, 0.25, 0.12]
    betas = np.stack([beta, beta[::-1]])
    X = rng.uniform(0, 1, (2 * n_per_cluster, n_features))
    cluster = np.repeat([0, 1], n_per_cluster)
    X[cluster == 1] += 1.0
    lin = np.einsum("nd,nd->n", X, betas[cluster])
    u = rng.uniform(size=len(X)) if noise == "random" else np.full(len(X), 0.5)
    T = (-np.log(u) / (lam * np.exp(lin))) ** (1.0 / shape)
    times, events = censor(T, censored, rng)
    return SurvivalData(minmax(X), times, events, [f"x{k + 1}" for k in range(n_features)],
                        "synthetic: two-cluster Weibull-Cox (this chapter's generator)",
                        truth=betas[cluster], extra={"cluster": cluster, "beta": betas})


def nonlinear_additive(n: int = 400, censored: float = 0.2, rng: np.random.Generator | None = None
                       ) -> SurvivalData:
    """T = x1^2 + relu(x2) + |x3| (x4, x5 have no effect), x ~ U[-5, 5]^5; truth = |dT/dx_k| at x."""
    rng = rng or np.random.default_rng(0)
    X = rng.uniform(-5, 5, (n, 5))
    T = X[:, 0] ** 2 + np.maximum(X[:, 1], 0) + np.abs(X[:, 2]) + 1e-3
    truth = np.stack([2 * np.abs(X[:, 0]), (X[:, 1] > 0).astype(float), np.ones(n),
                      np.zeros(n), np.zeros(n)], axis=1)
    times, events = censor(T, censored, rng)
    return SurvivalData(minmax(X), times, events, [f"x{k + 1}" for k in range(5)],
                        "synthetic: nonlinear additive times (this chapter's generator)",
                        truth=truth, extra={"X_raw": X})


REAL = {
    "gbsg2": "German Breast Cancer Study Group 2 (scikit-survival load_gbsg2; 686 patients)",
    "whas500": "Worcester Heart Attack Study (scikit-survival load_whas500; 500 patients)",
    "veterans": "Veterans' Administration lung cancer trial (scikit-survival "
                "load_veterans_lung_cancer; 137 patients)",
    "rossi": "Rossi et al. recidivism of released prisoners (lifelines load_rossi; 432 people)",
}


def encode(frame: pd.DataFrame) -> pd.DataFrame:
    """Numbers as they are; categorical columns as integer codes (binary ones become 0/1)."""
    out = {}
    for col in frame.columns:
        s = frame[col]
        if isinstance(s.dtype, pd.CategoricalDtype) or s.dtype == object:
            out[col] = pd.Categorical(s).codes.astype(float)
        else:
            out[col] = s.astype(float)
    return pd.DataFrame(out)


def load_real(name: str) -> SurvivalData:
    """One of REAL's datasets, label-encoded and min-max scaled (times in days, or weeks for rossi)."""
    if name not in REAL:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(REAL)}")
    if name == "rossi":
        from lifelines.datasets import load_rossi

        df = load_rossi()
        frame, times, events = df.drop(columns=["week", "arrest"]), df["week"], df["arrest"]
        unit = "weeks"
    else:
        import sksurv.datasets as sd

        loader = {"gbsg2": sd.load_gbsg2, "whas500": sd.load_whas500,
                  "veterans": sd.load_veterans_lung_cancer}[name]
        frame, y = loader()
        event_field, time_field = y.dtype.names
        times, events = y[time_field], y[event_field]
        unit = "days"
    frame = encode(frame)
    X = frame.to_numpy(dtype=float)
    return SurvivalData(minmax(X), np.asarray(times, float), np.asarray(events, bool), list(frame.columns),
                        REAL[name], extra={"time_unit": unit, "X_raw": X})
