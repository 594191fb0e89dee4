"""SurvBeNIM and SurvNAM: neural explainers fitted to a black box's survival functions.

Both use one small network per feature ("shape function" f_k). Many independent explainers are
trained at once: every parameter has a leading axis P (one explainer per explained instance in
strategy 1, P = 1 in strategy 2). Adam's update is elementwise, so training them together is the
same as training them one by one, only faster.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .beran import SurvivalTable, beran_survival, check_survival_data, kernel_weights, nelson_aalen

DTYPE = torch.float32  # survival probabilities need no more; float64 would double the training time


class FeatureNets(nn.Module):
    """P x d independent MLPs 1 -> hidden -> hidden -> 1: f_{p,k}(z_k), evaluated for all at once."""

    def __init__(self, n_models: int, n_features: int, hidden: int = 16, out_bias: float = 0.0,
                 generator: torch.Generator | None = None):
        super().__init__()
        P, d, h = n_models, n_features, hidden

        def uniform(*shape, fan_in):
            bound = 1.0 / math.sqrt(fan_in)
            return nn.Parameter((torch.rand(*shape, generator=generator, dtype=DTYPE) * 2 - 1) * bound)

        self.w1, self.b1 = uniform(P, d, h, fan_in=1), uniform(P, d, h, fan_in=1)
        self.w2, self.b2 = uniform(P, d, h, h, fan_in=h), uniform(P, d, h, fan_in=h)
        self.w3 = uniform(P, d, h, fan_in=h)
        self.b3 = nn.Parameter(torch.full((P, d), float(out_bias), dtype=DTYPE))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z (P, B, d) -> f (P, B, d)."""
        h1 = torch.relu(z[..., None] * self.w1[:, None] + self.b1[:, None])
        h2 = torch.relu(torch.einsum("pbdh,pdhk->pbdk", h1, self.w2) + self.b2[:, None])
        return torch.einsum("pbdk,pdk->pbd", h2, self.w3) + self.b3[:, None]


@dataclass
class Background:
    """The training data the explainers' survival functions are built on, as tensors."""

    X: torch.Tensor  # (n, d)
    table: SurvivalTable
    dt: torch.Tensor  # (m,) gaps between distinct times; the last gap is 0
    span: float

    @classmethod
    def from_arrays(cls, X, times, events) -> Background:
        X, times, events = check_survival_data(X, times, events)
        order = np.argsort(times, kind="stable")  # sorted once, so the estimator needs no permutation
        X, times, events = X[order], times[order], events[order]
        table = SurvivalTable.from_arrays(times, events)
        u = table.unique_times
        dt = torch.cat([u[1:] - u[:-1], u.new_zeros(1)])
        table.events = table.events.to(DTYPE)
        return cls(torch.as_tensor(X, dtype=DTYPE), table, dt.to(DTYPE), float(max(u[-1] - u[0], 1e-12)))

    @property
    def grid(self) -> np.ndarray:
        return self.table.unique_times.numpy()


def weighted_sq_distance(s_bb: torch.Tensor, s_ex: torch.Tensor, dt: torch.Tensor, span: float,
                         weights: torch.Tensor | None = None) -> torch.Tensor:
    """Delta-t weighted squared difference of two survival functions, averaged over the time span
    and (with ``weights``, shape (..., B)) a weighted mean over queries: shape (...) or (..., B)."""
    per_query = ((s_bb - s_ex).square() * dt).sum(-1) / span
    if weights is None:
        return per_query
    return (per_query * weights).sum(-1) / weights.sum(-1).clamp_min(1e-12)


class SurvBeNIM(nn.Module):
    """Beran estimator with kernel exp(-tau * mean_k g(f_k(z_k)) g(z_k - x_k)): importance b_k = g(f_k)."""

    def __init__(self, background: Background, n_models: int = 1, hidden: int = 16, tau: float = 1.0,
                 g: str = "abs", generator: torch.Generator | None = None):
        super().__init__()
        if g not in ("square", "abs"):
            raise ValueError(f"g must be 'square' or 'abs', got {g!r}")
        self.bg, self.tau, self.g = background, tau, g
        self.nets = FeatureNets(n_models, background.X.shape[1], hidden, out_bias=1.0, generator=generator)

    def importance(self, z: torch.Tensor) -> torch.Tensor:
        f = self.nets(z.to(DTYPE))
        return f.square() if self.g == "square" else f.abs()

    def survival(self, z: torch.Tensor) -> torch.Tensor:
        z = z.to(DTYPE)
        alpha = kernel_weights(z, self.bg.X, self.importance(z), self.tau, self.g)
        return beran_survival(alpha, self.bg.table)

    def explain(self, z: torch.Tensor) -> torch.Tensor:
        """Importance of each feature for a neighbourhood (P, B, d): its mean b_k over the points."""
        return self.importance(z).mean(1)


class SurvNAM(nn.Module):
    """Cox-type additive surrogate S(t|z) = exp(-H0(t) exp(sum_k f_k(z_k))), H0 the Nelson–Aalen estimate."""

    def __init__(self, background: Background, n_models: int = 1, hidden: int = 16,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.bg = background
        self.h0 = nelson_aalen(background.table).to(DTYPE)
        self.nets = FeatureNets(n_models, background.X.shape[1], hidden, out_bias=0.0, generator=generator)

    def shape_functions(self, z: torch.Tensor) -> torch.Tensor:
        return self.nets(z.to(DTYPE))

    def survival(self, z: torch.Tensor) -> torch.Tensor:
        risk = self.nets(z.to(DTYPE)).sum(-1, keepdim=True).clamp(-30, 30).exp()
        return torch.exp(-self.h0 * risk)

    def explain(self, z: torch.Tensor) -> torch.Tensor:
        """Importance of each feature for a neighbourhood: the spread (std) of f_k over the points."""
        return self.nets(z.to(DTYPE)).std(1)


def fit(model: nn.Module, z: torch.Tensor, s_bb: torch.Tensor, w: torch.Tensor, z_val: torch.Tensor,
        s_val: torch.Tensor, w_val: torch.Tensor, epochs: int = 100, lr: float = 1e-2,
        batch_size: int = 32, weight_decay: float = 0.0, generator: torch.Generator | None = None,
        progress=None) -> dict:
    """Minimise the weighted survival-function distance for all P explainers together; keep, for each,
    the parameters of the epoch with the lowest validation loss. Shapes: z (P, B, d), s_bb (P, B, m),
    w (P, B). Returns the loss history."""
    z, s_bb, w, z_val, s_val, w_val = (t.to(DTYPE) for t in (z, s_bb, w, z_val, s_val, w_val))
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    dt, span = model.bg.dt, model.bg.span

    def val_loss():
        with torch.no_grad():
            return weighted_sq_distance(s_val, model.survival(z_val), dt, span, w_val)

    best = val_loss()
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    history = {"train": [], "val": [best.mean().item()]}
    n = z.shape[1]
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        total = 0.0
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            loss = weighted_sq_distance(s_bb[:, idx], model.survival(z[:, idx]), dt, span, w[:, idx]).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx) / n
        current = val_loss()
        better = current < best
        for key, value in model.state_dict().items():
            if value.shape[:1] == better.shape:
                best_state[key][better] = value[better].detach()
        best = torch.minimum(best, current)
        history["train"].append(total / z.shape[0])
        history["val"].append(current.mean().item())
        if progress is not None:
            progress.update(1)
    model.load_state_dict(best_state)
    history["best_val"] = best.numpy()
    return history
