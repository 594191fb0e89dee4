"""Pix2Pix (Isola et al. 2017) for axial slices: a U-Net generator, a PatchGAN discriminator, L1 + GAN loss.

Small by default (16 base filters, 4 down-sampling levels) so that it trains on a CPU in minutes. Images
enter as [-1, 1] (the generator ends in tanh); slices are zero-padded (value -1) to a multiple of 2^depth.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn


class UNetGenerator(nn.Module):
    """Encoder-decoder with skip connections: each level halves the size (4×4 convolutions, stride 2) and the
    decoder concatenates the encoder's feature map of the same size before up-sampling again."""

    def __init__(self, in_channels: int = 1, out_channels: int = 1, ngf: int = 16, depth: int = 4,
                 dropout: float = 0.5):
        super().__init__()
        widths = [ngf * min(2**i, 8) for i in range(depth)]
        self.down = nn.ModuleList()
        prev = in_channels
        for i, w in enumerate(widths):
            layers = [nn.Conv2d(prev, w, 4, 2, 1, bias=i == 0)]
            if 0 < i < depth - 1:  # no normalisation on the outermost and the 1×1-ish innermost level
                layers.append(nn.BatchNorm2d(w))
            self.down.append(nn.Sequential(*layers))
            prev = w
        self.up = nn.ModuleList()
        for i in reversed(range(depth)):
            in_w = widths[i] if i == depth - 1 else 2 * widths[i]
            out_w = out_channels if i == 0 else widths[i - 1]
            if i == 0:
                layers = [nn.ReLU(), nn.ConvTranspose2d(in_w, out_w, 4, 2, 1), nn.Tanh()]
            else:
                layers = [nn.ReLU(), nn.ConvTranspose2d(in_w, out_w, 4, 2, 1, bias=False), nn.BatchNorm2d(out_w)]
                if dropout > 0 and i >= depth - 2:  # pix2pix's noise: dropout in the innermost decoder levels
                    layers.append(nn.Dropout(dropout))
            self.up.append(nn.Sequential(*layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else nn.functional.leaky_relu(x, 0.2))
            skips.append(x)
        x = skips.pop()
        for i, block in enumerate(self.up):
            if i > 0:
                x = torch.cat([x, skips.pop()], dim=1)
            x = block(x)
        return x


class PatchDiscriminator(nn.Module):
    """PatchGAN: a small fully convolutional net that scores overlapping patches of (input, output) as real or
    fake; with ``n_layers=3`` each output score sees a 70×70 patch, with 2 a 34×34 patch."""

    def __init__(self, in_channels: int = 2, ndf: int = 16, n_layers: int = 2):
        super().__init__()
        layers = [nn.Conv2d(in_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2)]
        width = ndf
        for i in range(1, n_layers + 1):
            new = ndf * min(2**i, 8)
            stride = 2 if i < n_layers else 1
            layers += [nn.Conv2d(width, new, 4, stride, 1, bias=False), nn.BatchNorm2d(new), nn.LeakyReLU(0.2)]
            width = new
        layers.append(nn.Conv2d(width, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([source, target], dim=1))


def pad_to_multiple(x: torch.Tensor, multiple: int, value: float = -1.0) -> tuple[torch.Tensor, tuple[int, int]]:
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    return nn.functional.pad(x, (0, pw, 0, ph), value=value), (h, w)


@dataclass
class Pix2PixSettings:
    epochs: int = 10
    batch_size: int = 8
    lr: float = 2e-4
    beta1: float = 0.5
    lambda_l1: float = 100.0
    ngf: int = 16
    ndf: int = 16
    depth: int = 4
    d_layers: int = 2
    history: dict = field(default_factory=dict)


def train_pix2pix(sources: np.ndarray, targets: np.ndarray, settings: Pix2PixSettings, seed: int = 0,
                  progress=None) -> tuple[UNetGenerator, dict]:
    """Train on paired slices (N, H, W) in [0, 1]. Returns the generator (eval mode) and per-epoch losses.

    Generator loss: BCE(D(x, G(x)), real) + λ·|G(x) − y|₁; discriminator loss: ½[BCE(D(x, y), real) +
    BCE(D(x, G(x)), fake)]; Adam with β₁ = 0.5, as in the paper.
    """
    if sources.shape != targets.shape or sources.ndim != 3:
        raise ValueError(f"need paired slices of shape (N, H, W); got {sources.shape} and {targets.shape}")
    gen_rng = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x_all, _ = pad_to_multiple(torch.as_tensor(sources, dtype=torch.float32)[:, None] * 2 - 1, 2**settings.depth)
    y_all, _ = pad_to_multiple(torch.as_tensor(targets, dtype=torch.float32)[:, None] * 2 - 1, 2**settings.depth)
    generator = UNetGenerator(1, 1, settings.ngf, settings.depth)
    discriminator = PatchDiscriminator(2, settings.ndf, settings.d_layers)
    opt_g = torch.optim.Adam(generator.parameters(), lr=settings.lr, betas=(settings.beta1, 0.999))
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=settings.lr, betas=(settings.beta1, 0.999))
    bce = nn.BCEWithLogitsLoss()
    history = {"g_gan": [], "g_l1": [], "d": []}
    for _ in range(settings.epochs):
        generator.train()
        discriminator.train()
        order = torch.randperm(len(x_all), generator=gen_rng)
        sums = np.zeros(3)
        for start in range(0, len(order), settings.batch_size):
            idx = order[start:start + settings.batch_size]
            x, y = x_all[idx], y_all[idx]
            fake = generator(x)
            # discriminator step
            opt_d.zero_grad()
            real_score, fake_score = discriminator(x, y), discriminator(x, fake.detach())
            loss_d = 0.5 * (bce(real_score, torch.ones_like(real_score))
                            + bce(fake_score, torch.zeros_like(fake_score)))
            loss_d.backward()
            opt_d.step()
            # generator step
            opt_g.zero_grad()
            score = discriminator(x, fake)
            loss_gan = bce(score, torch.ones_like(score))
            loss_l1 = nn.functional.l1_loss(fake, y)
            (loss_gan + settings.lambda_l1 * loss_l1).backward()
            opt_g.step()
            sums += np.array([loss_gan.item(), loss_l1.item(), loss_d.item()]) * len(idx)
        for key, value in zip(history, sums / len(x_all)):
            history[key].append(float(value))
        if progress is not None:
            progress.update(1)
    return generator.eval(), history


@torch.no_grad()
def synthesise_volume(generator: UNetGenerator, t1p: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Apply the generator to every axial slice (last axis) of a [0, 1] T1; output in [0, 1], 0 outside the
    T1's foreground."""
    generator.eval()
    slices = torch.as_tensor(np.moveaxis(t1p, -1, 0), dtype=torch.float32)[:, None] * 2 - 1
    depth = len(generator.down)
    padded, (h, w) = pad_to_multiple(slices, 2**depth)
    out = torch.cat([generator(padded[i:i + batch_size]) for i in range(0, len(padded), batch_size)])
    volume = np.moveaxis(((out[:, 0, :h, :w] + 1) / 2).clamp(0, 1).numpy(), 0, -1)
    return np.where(t1p > t1p.min(), volume, 0.0).astype(np.float32)


def brain_slices(t1p: np.ndarray, t2p: np.ndarray, min_brain: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Axial slices (last axis) in which at least ``min_brain`` of the pixels are brain."""
    fg = (t1p > t1p.min()).mean(axis=(0, 1))
    keep = np.flatnonzero(fg >= min_brain)
    return np.moveaxis(t1p[..., keep], -1, 0), np.moveaxis(t2p[..., keep], -1, 0)
