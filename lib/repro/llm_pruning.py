"""One-shot pruning of a decoder-only LLM, layer by layer, as Wanda and SparseGPT do it.

The calibration batch runs through the model one decoder layer at a time: each layer's linear inputs
are recorded with the layer still dense, every linear of the layer is pruned from those statistics, and
the layer is run again so that the *pruned* outputs feed the next layer. Embeddings and the LM head are
never touched.

Methods: ``magnitude`` (|W|), ``wanda`` (|W| * ||X||), ``sparsegpt`` (OBS with weight updates) and
``esparse`` (entropy-enhanced metric and channel shuffles, no weight updates).
Patterns: ``"2:4"``, ``"4:8"``, ``"unstructured50"`` (half of each row, or of each SparseGPT block).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from . import esparse
from .pruning import nm_mask
from .sparsegpt import hessian_of, inverse_hessian_factor, prune_with_factor

PATTERNS = ("2:4", "4:8", "unstructured50")
METHODS = ("magnitude", "wanda", "sparsegpt", "esparse")


@dataclass(frozen=True)
class PruneConfig:
    method: str
    pattern: str
    entropy_bins: int = 64
    combine: str = "scaled"
    alpha: float = 1.0
    global_shuffle: bool = True
    local_shuffle: bool = True
    shuffle_passes: int = 2
    block_groups: int = 2
    shuffle_rows: int = 128
    percdamp: float = 0.01

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown pruning method {self.method!r}; choose one of {METHODS}")
        parse_pattern(self.pattern)
        if self.combine not in esparse.COMBINATIONS:
            raise ValueError(f"combine must be one of {esparse.COMBINATIONS}, got {self.combine!r}")

    @property
    def needs_calibration(self) -> bool:
        return self.method != "magnitude"


def parse_pattern(pattern: str) -> tuple[int, int, float]:
    """(n, m, sparsity): n = m = 0 for unstructured patterns."""
    if pattern == "unstructured50":
        return 0, 0, 0.5
    try:
        n, m = (int(v) for v in pattern.split(":"))
    except ValueError:
        n = m = -1
    if pattern not in PATTERNS or not 0 < n < m:
        raise ValueError(f"unknown sparsity pattern {pattern!r}; choose one of {PATTERNS}")
    return n, m, 1 - n / m


class PermutedLinear(nn.Module):
    """A linear layer whose input channels are read in the order ``perm``: y = W' x[perm] + b.

    With W' = W[:, perm] it computes exactly what the original layer did; it exists so that the N:M
    groups of W' can be formed from shuffled channels. ``linear`` stays an ``nn.Linear``, so
    ``repro.pruning.to_sparse24`` can still swap it for the sparse kernel.
    """

    def __init__(self, linear: nn.Linear, perm: torch.Tensor):
        super().__init__()
        self.linear = linear
        self.register_buffer("perm", perm.clone())

    @classmethod
    def shuffled(cls, linear: nn.Linear, perm: torch.Tensor) -> PermutedLinear:
        # skip_init: the weights are overwritten at once, so no random initialisation
        new = nn.utils.skip_init(nn.Linear, linear.in_features, linear.out_features, bias=linear.bias is not None,
                                 device=linear.weight.device, dtype=linear.weight.dtype)
        with torch.no_grad():
            new.weight.copy_(linear.weight[:, perm])
            if linear.bias is not None:
                new.bias.copy_(linear.bias)
        return cls(new, perm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.index_select(-1, self.perm))


def decoder_layers(model) -> nn.ModuleList:
    """The decoder layers of a LLaMA-style (model.model.layers) or OPT (model.model.decoder.layers) model."""
    inner = model.model
    layers = getattr(inner, "layers", None) or getattr(getattr(inner, "decoder", None), "layers", None)
    if layers is None:
        raise ValueError(f"cannot find the decoder layers of {type(model).__name__} (LLaMA or OPT layout expected)")
    return layers


def layer_linears(layer: nn.Module) -> dict[str, nn.Linear]:
    return {name: mod for name, mod in layer.named_modules() if isinstance(mod, nn.Linear)}


class _Captured(Exception):
    pass


def capture_first_layer_inputs(model, input_ids: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Hidden states entering decoder layer 0 and the keyword arguments the model passes to its layers
    (attention mask, position embeddings...), captured by interrupting one forward pass."""
    captured = {}

    def grab(module, args, kwargs):
        captured["hidden"] = args[0] if args else kwargs.pop("hidden_states")
        captured["kwargs"] = {k: v for k, v in kwargs.items() if k != "hidden_states"}
        raise _Captured

    handle = decoder_layers(model)[0].register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad():
            model(input_ids.to(next(model.parameters()).device), use_cache=False)
    except _Captured:
        pass
    finally:
        handle.remove()
    return captured["hidden"], captured["kwargs"]


def run_layer(layer: nn.Module, hidden: torch.Tensor, kwargs: dict) -> torch.Tensor:
    with torch.no_grad():
        out = layer(hidden, **kwargs)
    return out[0] if isinstance(out, tuple) else out


def record_linear_inputs(layer: nn.Module, hidden: torch.Tensor, kwargs: dict) -> dict[str, torch.Tensor]:
    """Inputs (tokens x in_features) that each linear of ``layer`` sees while the layer runs."""
    inputs, handles = {}, []
    for name, linear in layer_linears(layer).items():
        def hook(module, args, name=name):
            inputs[name] = args[0].detach().reshape(-1, args[0].shape[-1])
        handles.append(linear.register_forward_pre_hook(hook))
    try:
        run_layer(layer, hidden, kwargs)
    finally:
        for h in handles:
            h.remove()
    return inputs


def scores_for(cfg: PruneConfig, weight: torch.Tensor, x: torch.Tensor | None) -> torch.Tensor:
    if cfg.method == "magnitude":
        return weight.detach().abs().float()
    norm = x.float().pow(2).sum(0).sqrt()
    if cfg.method == "wanda":
        return weight.detach().abs().float() * norm.unsqueeze(0)
    entropy = esparse.channel_entropy(x, cfg.entropy_bins)
    return esparse.esparse_scores(weight, norm, entropy, combine=cfg.combine, alpha=cfg.alpha,
                                  bins=cfg.entropy_bins)


def mask_from_scores(scores: torch.Tensor, pattern: str) -> torch.Tensor:
    n, m, sparsity = parse_pattern(pattern)
    if n:
        return nm_mask(scores, n, m)
    drop = int(scores.shape[1] * sparsity)  # per output row, as Wanda compares weights
    order = scores.argsort(dim=1)
    mask = torch.ones_like(scores, dtype=torch.bool)
    mask.scatter_(1, order[:, :drop], False)
    return mask


def prune_linear(linear: nn.Linear, x: torch.Tensor | None, cfg: PruneConfig) -> tuple[nn.Module, dict]:
    """The pruned replacement for one linear layer, and what was done (for reports)."""
    n, m, sparsity = parse_pattern(cfg.pattern)
    weight = linear.weight
    if cfg.method == "sparsegpt":
        prune_sharing_inputs({"linear": linear}, {"linear": x}, cfg)  # the layer-wise path, one linear
        return linear, {}
    scores = scores_for(cfg, weight, x)
    info = {}
    if cfg.method == "esparse" and n and (cfg.global_shuffle or cfg.local_shuffle):
        identity = torch.arange(scores.shape[1], device=scores.device)
        perm = esparse.global_naive_shuffle(scores, m) if cfg.global_shuffle else identity
        # the share kept after each step, so a report can tell the two shuffles' gains apart
        info = {"retained_before": esparse.retained_fraction(scores, None, n, m),
                "retained_global": esparse.retained_fraction(scores, perm, n, m)}
        if cfg.local_shuffle:
            perm = esparse.local_block_shuffle(scores, perm, n, m, cfg.block_groups, cfg.shuffle_passes,
                                               max_rows=cfg.shuffle_rows)
        linear = PermutedLinear.shuffled(linear, perm)
        scores, weight = scores[:, perm], linear.linear.weight
    mask = mask_from_scores(scores, cfg.pattern)
    if info:  # the N:M mask keeps the best n of every group: its share is the retained fraction
        info["retained_after"] = float((scores * mask).sum() / scores.sum())
    with torch.no_grad():
        weight.mul_(mask.to(weight.dtype))
    return linear, info


def prune_sharing_inputs(linears: dict[str, nn.Linear], inputs: dict[str, torch.Tensor], cfg: PruneConfig) -> None:
    """SparseGPT on the linears of one layer, one inverse-Hessian factor and one sweep per distinct
    input: linears that read the same input (q/k/v, gate/up) share H = X^T X, and their weights are
    stacked row-wise into one sweep. The OBS update and the N:M choice work row by row, and an
    unstructured choice is made within each linear's own rows (``row_groups``), so the result is
    the per-linear one."""
    n, m, sparsity = parse_pattern(cfg.pattern)
    groups: dict[int, list[str]] = {}
    for name in linears:
        groups.setdefault(inputs[name].data_ptr(), []).append(name)
    for names in groups.values():
        factor, dead = inverse_hessian_factor(hessian_of(inputs[names[0]]), cfg.percdamp)
        rows = [linears[k].out_features for k in names]
        stacked = torch.cat([linears[k].weight for k in names])
        pruned = prune_with_factor(stacked, factor, dead, sparsity=sparsity, n=n, m=m, row_groups=rows)
        for name, part in zip(names, pruned.split(rows)):
            with torch.no_grad():
                linears[name].weight.copy_(part)


def replace_module(root: nn.Module, dotted: str, new: nn.Module) -> None:
    parent_name, _, child = dotted.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, new)


def prune_model(model, calibration_ids: torch.Tensor | None, cfg: PruneConfig, progress: bool = False,
                max_layers: int | None = None) -> dict:
    """Prune every linear of every decoder layer in place (of the first ``max_layers`` layers if given,
    for quick checks). Returns per-linear reports."""
    layers = decoder_layers(model)
    if max_layers is not None:
        layers = layers[:max_layers]
    reports = {}
    if cfg.needs_calibration:
        if calibration_ids is None:
            raise ValueError(f"method {cfg.method!r} needs calibration_ids")
        hidden, kwargs = capture_first_layer_inputs(model, calibration_ids)
    iterator = range(len(layers))
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc=f"{cfg.method} {cfg.pattern}", leave=False)
    for i in iterator:
        layer = layers[i]
        inputs = record_linear_inputs(layer, hidden, kwargs) if cfg.needs_calibration else {}
        if cfg.method == "sparsegpt":
            prune_sharing_inputs(layer_linears(layer), inputs, cfg)
            hidden = run_layer(layer, hidden, kwargs)
            continue
        for name, linear in layer_linears(layer).items():
            new, info = prune_linear(linear, inputs.get(name), cfg)
            if new is not linear:
                replace_module(layer, name, new)
            reports[f"layers.{i}.{name}"] = info
        if cfg.needs_calibration:
            hidden = run_layer(layer, hidden, kwargs)
    return reports


def linear_weights(model) -> dict[str, torch.Tensor]:
    """Weights of all decoder linears (for checks and the memory count)."""
    out = {}
    for i, layer in enumerate(decoder_layers(model)):
        for name, linear in layer_linears(layer).items():
            out[f"layers.{i}.{name}"] = linear.weight
    return out


__all__ = ["METHODS", "PATTERNS", "PermutedLinear", "PruneConfig", "capture_first_layer_inputs",
           "decoder_layers", "linear_weights", "mask_from_scores", "parse_pattern", "prune_linear",
           "prune_model", "record_linear_inputs", "run_layer"]
