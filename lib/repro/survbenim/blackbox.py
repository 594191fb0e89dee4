"""Black-box survival models behind one interface: fit on (X, times, events), return S(t | x) on a grid."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from .beran import check_instances, check_survival_data


class SurvivalBlackBox:
    """``fit(X, times, events)``, then ``survival(X, grid)`` -> array (n, len(grid)) of S(t | x)."""

    name = "black box"

    def fit(self, X, times, events) -> SurvivalBlackBox:
        X, times, events = check_survival_data(X, times, events)
        self.n_features_ = X.shape[1]
        self._fit(X, times, events)
        return self

    def survival(self, X, grid) -> np.ndarray:
        X = check_instances(X, self.n_features_, "black-box input")
        return np.clip(self._survival(X, np.asarray(grid, float)), 0.0, 1.0)


class RandomSurvivalForest(SurvivalBlackBox):
    """scikit-survival's random survival forest (the repository's default black box)."""

    name = "random survival forest"

    def __init__(self, n_estimators: int = 100, max_depth: int = 8, min_samples_leaf: int = 3,
                 random_state: int = 0):
        self.params = dict(n_estimators=n_estimators, max_depth=max_depth,
                           min_samples_leaf=min_samples_leaf, random_state=random_state)

    def _fit(self, X, times, events):
        from sksurv.ensemble import RandomSurvivalForest as RSF
        from sksurv.util import Surv

        self.model_ = RSF(n_jobs=1, max_samples=min(500, len(X)), **self.params)
        self.model_.fit(X, Surv.from_arrays(events, times))

    def _survival(self, X, grid):
        values = self.model_.predict_survival_function(X, return_array=True)  # at the model's event times
        knots = self.model_.unique_times_
        idx = np.searchsorted(knots, grid, side="right") - 1  # step function: last knot <= t
        out = values[:, np.clip(idx, 0, None)]
        out[:, idx < 0] = 1.0
        return out


class CoxPH(SurvivalBlackBox):
    """lifelines' Cox proportional-hazards model (Breslow baseline), lightly penalised for stability."""

    name = "Cox PH"

    def __init__(self, penalizer: float = 0.01):
        self.penalizer = penalizer

    def _frame(self, X):
        return pd.DataFrame(X, columns=[f"x{k}" for k in range(X.shape[1])])

    def _fit(self, X, times, events):
        from lifelines import CoxPHFitter

        df = self._frame(X).assign(T=times, E=events.astype(int))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.model_ = CoxPHFitter(penalizer=self.penalizer).fit(df, "T", "E")

    @property
    def coefficients(self) -> np.ndarray:
        return self.model_.params_.to_numpy()

    def _survival(self, X, grid):
        return self.model_.predict_survival_function(self._frame(X), times=grid).to_numpy().T


BLACK_BOXES = {"rsf": RandomSurvivalForest, "cox": CoxPH}


def make_black_box(name: str, seed: int = 0) -> SurvivalBlackBox:
    if name not in BLACK_BOXES:
        raise ValueError(f"unknown black box {name!r}; choose one of {sorted(BLACK_BOXES)}")
    return RandomSurvivalForest(random_state=seed) if name == "rsf" else CoxPH()
