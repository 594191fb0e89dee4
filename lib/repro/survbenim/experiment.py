"""The chapter's experiments: strategy 1 (one explainer per instance) and strategy 2 (one for the domain)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .beran import check_instances
from .blackbox import SurvivalBlackBox
from .data import SurvivalData
from .explainers import Background, SurvBeNIM, SurvNAM, fit
from .local import cox_survival, neighbours, survlime, survshap
from .metrics import survival_distance

METHODS = ("survbenim", "survlime", "survnam", "survshap")


@dataclass
class Settings:
    n_neighbours: int = 100  # training neighbours per explained instance
    n_val: int = 50  # validation neighbours (checkpoint choice)
    radius: float = 0.2  # neighbourhood radius, in per-feature standard deviations
    epochs: int = 100
    lr: float = 1e-2
    batch_size: int = 25
    weight_decay: float = 0.0
    hidden: int = 16  # units per hidden layer of each feature network
    tau: float = 1.0  # kernel width of SurvBeNIM's Beran kernel
    g: str = "abs"  # g in the kernel: 'abs' or 'square'
    n_shap_background: int = 30  # background rows of SurvSHAP(t)'s value function


@dataclass
class Neighbourhoods:
    """Train / validation / evaluation neighbours of P instances with the black box's survival functions."""

    z: dict[str, np.ndarray] = field(default_factory=dict)  # split -> (P, B, d)
    w: dict[str, np.ndarray] = field(default_factory=dict)  # split -> (P, B)
    s: dict[str, np.ndarray] = field(default_factory=dict)  # split -> (P, B, m)

    def tensors(self, split):
        return torch.as_tensor(self.z[split]), torch.as_tensor(self.s[split]), torch.as_tensor(self.w[split])


def make_neighbourhoods(bb: SurvivalBlackBox, grid, instances, scale, sizes: dict[str, int], radius: float,
                        rng: np.random.Generator) -> Neighbourhoods:
    out = Neighbourhoods()
    for split, n in sizes.items():
        pairs = [neighbours(x, scale, n, radius, rng) for x in instances]
        z = np.stack([p[0] for p in pairs])
        out.z[split], out.w[split] = z, np.stack([p[1] for p in pairs])
        out.s[split] = bb.survival(z.reshape(-1, z.shape[-1]), grid).reshape(*z.shape[:2], -1)
    return out


@dataclass
class Strategy1Result:
    importance: dict[str, np.ndarray]  # method -> (P, d)
    fidelity: dict[str, np.ndarray]  # method -> (P,) on evaluation neighbours (nan where undefined)
    fidelity_point: dict[str, np.ndarray]  # method -> (P,) at the explained instance
    s_point: dict[str, np.ndarray]  # "black box" and method -> (P, m) at the explained instance
    history: dict[str, dict]
    grid: np.ndarray


def strategy1(bb: SurvivalBlackBox, train: SurvivalData, instances, cfg: Settings, seed: int = 0,
              methods=METHODS, progress=None) -> Strategy1Result:
    """Explain each instance with every method; SurvBeNIM and SurvNAM train one network set per instance."""
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {list(METHODS)}")
    instances = check_instances(instances, train.X.shape[1], "explained instance")
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    bg = Background.from_arrays(train.X, train.times, train.events)
    grid, dt = bg.grid, bg.dt.numpy()
    scale = train.X.std(0) + 1e-12
    nb = make_neighbourhoods(bb, grid, instances, scale, {"train": cfg.n_neighbours, "val": cfg.n_val,
                             "eval": cfg.n_neighbours}, cfg.radius, rng)
    point = torch.as_tensor(instances)[:, None, :]
    s_bb_point = bb.survival(instances, grid)
    res = Strategy1Result({}, {}, {}, {"black box": s_bb_point}, {}, grid)
    z_eval = torch.as_tensor(nb.z["eval"])

    for name in [m for m in ("survbenim", "survnam") if m in methods]:
        P = len(instances)
        model = (SurvBeNIM(bg, P, cfg.hidden, cfg.tau, cfg.g, generator=gen) if name == "survbenim"
                 else SurvNAM(bg, P, cfg.hidden, generator=gen))
        res.history[name] = fit(model, *nb.tensors("train"), *nb.tensors("val"), epochs=cfg.epochs, lr=cfg.lr,
                                batch_size=cfg.batch_size, weight_decay=cfg.weight_decay, generator=gen,
                                progress=progress)
        with torch.no_grad():
            res.importance[name] = model.explain(torch.as_tensor(nb.z["train"])).numpy()
            s_eval = model.survival(z_eval).numpy()
            res.s_point[name] = model.survival(point)[:, 0].numpy()

        res.fidelity[name] = np.array([survival_distance(nb.s["eval"][p], s_eval[p], grid, nb.w["eval"][p])
                                       for p in range(P)])

    if "survlime" in methods:
        h0 = -np.log(np.clip(bb.survival(train.X, grid).mean(0), 1e-12, 1))  # population hazard of the box
        coefs = np.stack([survlime(nb.z["train"][p], nb.w["train"][p], nb.s["train"][p], h0, dt)
                          for p in range(len(instances))])
        res.importance["survlime"] = coefs
        res.s_point["survlime"] = np.stack([cox_survival(x[None], b, h0)[0]
                                            for x, b in zip(instances, coefs, strict=True)])
        res.fidelity["survlime"] = np.array([
            survival_distance(nb.s["eval"][p], cox_survival(nb.z["eval"][p], coefs[p], h0), grid,
                              nb.w["eval"][p]) for p in range(len(instances))])

    if "survshap" in methods:
        bg_rows = train.X[rng.choice(len(train.X), min(cfg.n_shap_background, len(train.X)), replace=False)]
        phis, sums = [], []
        for x in instances:
            phi, base = survshap(lambda rows: bb.survival(rows, grid), x, bg_rows)
            phis.append(phi)
            sums.append(base + phi.sum(0))
        span = max(grid[-1] - grid[0], 1e-12)
        res.importance["survshap"] = np.stack([(np.abs(phi) * dt).sum(-1) / span for phi in phis])
        res.s_point["survshap"] = np.stack(sums)
        res.fidelity["survshap"] = np.full(len(instances), np.nan)  # an attribution, not a surrogate

    for name in res.importance:
        res.fidelity_point[name] = np.array([survival_distance(s_bb_point[p], res.s_point[name][p], grid)
                                             for p in range(len(instances))])
    return res


@dataclass
class Strategy2Result:
    models: dict  # method -> trained explainer (P = 1)
    fidelity: dict[str, np.ndarray]  # method -> (n_eval,) neighbourhood fidelity of held-out instances
    fidelity_point: dict[str, np.ndarray]
    importance: dict[str, np.ndarray]  # method -> (n_eval, d)
    history: dict[str, dict]
    background: Background


def strategy2(bb: SurvivalBlackBox, train: SurvivalData, eval_instances, cfg: Settings, n_centres: int = 20,
              seed: int = 0, methods=("survbenim", "survnam"), progress=None) -> Strategy2Result:
    """One explainer for the whole domain, trained on the neighbourhoods of n_centres training points;
    then held-out instances are explained without retraining."""
    unknown = sorted(set(methods) - {"survbenim", "survnam"})
    if unknown:
        raise ValueError(f"strategy 2 trains neural explainers only; unknown methods {unknown}, "
                         "choose from ['survbenim', 'survnam']")
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    bg = Background.from_arrays(train.X, train.times, train.events)
    grid = bg.grid
    scale = train.X.std(0) + 1e-12
    centres = train.X[rng.choice(len(train.X), min(n_centres, len(train.X)), replace=False)]
    nb = make_neighbourhoods(bb, grid, centres, scale, {"train": cfg.n_neighbours, "val": cfg.n_val},
                             cfg.radius, rng)
    # all centres' neighbourhoods pooled into one explainer (P = 1)
    pooled = Neighbourhoods(*({split: a.reshape(1, -1, *a.shape[2:]) for split, a in part.items()}
                              for part in (nb.z, nb.w, nb.s)))
    instances = check_instances(eval_instances, train.X.shape[1], "explained instance")
    ev = make_neighbourhoods(bb, grid, instances, scale, {"eval": cfg.n_neighbours}, cfg.radius, rng)
    s_point = bb.survival(instances, grid)
    res = Strategy2Result({}, {}, {}, {}, {}, bg)
    for name in methods:
        model = (SurvBeNIM(bg, 1, cfg.hidden, cfg.tau, cfg.g, generator=gen) if name == "survbenim"
                 else SurvNAM(bg, 1, cfg.hidden, generator=gen))
        res.history[name] = fit(model, *pooled.tensors("train"), *pooled.tensors("val"), epochs=cfg.epochs, lr=cfg.lr,
                                batch_size=cfg.batch_size, weight_decay=cfg.weight_decay, generator=gen,
                                progress=progress)
        with torch.no_grad():
            z = torch.as_tensor(ev.z["eval"]).reshape(1, -1, instances.shape[1])
            s_eval = model.survival(z).reshape(len(instances), -1, len(grid)).numpy()
            x = torch.as_tensor(instances)[None]
            s_pt = model.survival(x)[0].numpy()
            explain = model.importance if name == "survbenim" else model.shape_functions
            res.importance[name] = explain(x)[0].numpy()
        res.models[name] = model
        res.fidelity[name] = np.array([survival_distance(ev.s["eval"][p], s_eval[p], grid, ev.w["eval"][p])
                                       for p in range(len(instances))])
        res.fidelity_point[name] = np.array([survival_distance(s_point[p], s_pt[p], grid)
                                             for p in range(len(instances))])
    return res
