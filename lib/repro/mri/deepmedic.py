"""A DeepMedic-style 3-D CNN (Kamnitsas et al. 2017), small enough for a CPU.

Two pathways of unpadded 3×3×3 convolutions see the same output block: the normal pathway at full
resolution, and a context pathway on a 3× down-sampled (average-pooled) and therefore 3× wider neighbourhood.
The context features are up-sampled back (nearest neighbour), concatenated with the normal ones, and 1×1×1
convolutions (DeepMedic's fully connected layers) give the class scores of every voxel in the block.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

LABELS = (0, 1, 2, 4)  # BraTS labels ↔ class indices 0..3


def pathway(in_channels: int, widths: tuple[int, ...]) -> nn.Sequential:
    layers, prev = [], in_channels
    for w in widths:
        layers += [nn.Conv3d(prev, w, 3), nn.BatchNorm3d(w), nn.PReLU(w)]
        prev = w
    return nn.Sequential(*layers)


class DeepMedic(nn.Module):
    def __init__(self, in_channels: int = 4, n_classes: int = 4, widths: tuple[int, ...] = (8, 8, 12, 12),
                 fc: int = 32, factor: int = 3):
        super().__init__()
        self.widths, self.factor = tuple(widths), factor
        self.normal = pathway(in_channels, self.widths)
        self.context = pathway(in_channels, self.widths)
        self.head = nn.Sequential(nn.Conv3d(2 * widths[-1], fc, 1), nn.BatchNorm3d(fc), nn.PReLU(fc),
                                  nn.Conv3d(fc, n_classes, 1))

    @property
    def shrink(self) -> int:
        """Voxels lost on each side by the unpadded convolutions of one pathway."""
        return len(self.widths)

    def forward(self, normal: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        n = self.normal(normal)
        c = nn.functional.interpolate(self.context(context), scale_factor=self.factor, mode="nearest")
        if c.shape[2:] != n.shape[2:]:
            raise ValueError(f"pathways disagree: normal output {tuple(n.shape[2:])}, context {tuple(c.shape[2:])}")
        return self.head(torch.cat([n, c], dim=1))


def normalise_channels(images: list[np.ndarray], brain: np.ndarray) -> np.ndarray:
    """Stack contrasts as channels, each z-scored over the brain and 0 outside; a constant (e.g. missing,
    all-zero) channel stays 0."""
    out = np.zeros((len(images), *brain.shape), dtype=np.float32)
    for i, img in enumerate(images):
        values = img[brain]
        std = float(values.std()) if values.size else 0.0
        if std > 0:
            out[i][brain] = (values - values.mean()) / std
    return out


def segment_inputs(volume: np.ndarray, corners: np.ndarray, size: int, shrink: int, factor: int):
    """Normal and context inputs for output blocks of ``size``³ voxels starting at ``corners``.

    The normal input covers the block plus ``shrink`` voxels per side; the context input covers the block
    plus ``factor·shrink`` per side, average-pooled by ``factor``. ``volume`` is (C, X, Y, Z), zero-padded here.
    """
    if size % factor:
        raise ValueError(f"segment size {size} must be a multiple of the context factor {factor}")
    pad = factor * shrink + size
    padded = np.pad(volume, [(0, 0)] + [(pad, pad)] * 3)
    n_side, c_side = size + 2 * shrink, size + 2 * factor * shrink
    normal = np.empty((len(corners), volume.shape[0], n_side, n_side, n_side), dtype=np.float32)
    context = np.empty((len(corners), volume.shape[0], c_side // factor, c_side // factor, c_side // factor),
                       dtype=np.float32)
    for i, corner in enumerate(np.asarray(corners) + pad):
        a = corner - shrink
        normal[i] = padded[:, a[0]:a[0] + n_side, a[1]:a[1] + n_side, a[2]:a[2] + n_side]
        b = corner - factor * shrink
        block = padded[:, b[0]:b[0] + c_side, b[1]:b[1] + c_side, b[2]:b[2] + c_side]
        m = c_side // factor
        context[i] = block.reshape(volume.shape[0], m, factor, m, factor, m, factor).mean(axis=(2, 4, 6))
    return torch.from_numpy(normal), torch.from_numpy(context)


def to_classes(seg: np.ndarray) -> np.ndarray:
    lut = np.zeros(max(LABELS) + 1, dtype=np.int64)
    lut[list(LABELS)] = np.arange(len(LABELS))
    return lut[seg]


@dataclass
class DeepMedicSettings:
    iterations: int = 300
    batch_size: int = 16
    segment: int = 9  # training output block edge (voxels); a multiple of the context factor
    lr: float = 1e-3
    tumour_share: float = 0.5  # share of training blocks centred on a tumour voxel (the rest: any brain voxel)
    widths: tuple = (8, 8, 12, 12)
    fc: int = 32


def sample_corners(seg: np.ndarray, brain: np.ndarray, n: int, size: int, tumour_share: float,
                   rng: np.random.Generator) -> np.ndarray:
    """Block corners whose centres are tumour voxels (share ``tumour_share``) or brain voxels (the rest)."""
    tumour, anywhere = np.argwhere(seg > 0), np.argwhere(brain)
    n_tumour = rng.binomial(n, tumour_share) if len(tumour) else 0
    centres = np.concatenate([tumour[rng.integers(len(tumour), size=n_tumour)],
                              anywhere[rng.integers(len(anywhere), size=n - n_tumour)]])
    return centres - size // 2


def train_deepmedic(volumes: list[np.ndarray], segs: list[np.ndarray], brains: list[np.ndarray],
                    settings: DeepMedicSettings, seed: int = 0, progress=None) -> tuple[DeepMedic, list[float]]:
    """Train on (C, X, Y, Z) normalised volumes with BraTS label maps; returns the model and the loss per step."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    model = DeepMedic(volumes[0].shape[0], len(LABELS), settings.widths, settings.fc)
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr)
    classes = [to_classes(s) for s in segs]
    losses = []
    for _ in range(settings.iterations):
        model.train()
        s = int(rng.integers(len(volumes)))
        corners = sample_corners(segs[s], brains[s], settings.batch_size, settings.segment, settings.tumour_share,
                                 rng)
        normal, context = segment_inputs(volumes[s], corners, settings.segment, model.shrink, model.factor)
        target = segment_inputs(classes[s][None].astype(np.float32), corners, settings.segment, 0, 1)[0]
        loss = nn.functional.cross_entropy(model(normal, context), target[:, 0].long())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.item()))
        if progress is not None:
            progress.update(1)
    return model.eval(), losses


@torch.no_grad()
def segment_volume(model: DeepMedic, volume: np.ndarray, brain: np.ndarray, size: int = 27,
                   batch_size: int = 8) -> np.ndarray:
    """BraTS label map of a whole (C, X, Y, Z) volume, tiled in blocks of ``size``³; 0 outside the brain."""
    model.eval()
    shape = np.array(volume.shape[1:])
    grid = [np.arange(0, n, size) for n in shape]
    corners = np.stack(np.meshgrid(*grid, indexing="ij"), -1).reshape(-1, 3)
    out = np.zeros(tuple(shape + size), dtype=np.int64)
    for start in range(0, len(corners), batch_size):
        chunk = corners[start:start + batch_size]
        normal, context = segment_inputs(volume, chunk, size, model.shrink, model.factor)
        pred = model(normal, context).argmax(1).numpy()
        for corner, block in zip(chunk, pred):
            out[corner[0]:corner[0] + size, corner[1]:corner[1] + size, corner[2]:corner[2] + size] = block
    labels = np.asarray(LABELS, dtype=np.uint8)[out[:shape[0], :shape[1], :shape[2]]]
    return np.where(brain, labels, 0).astype(np.uint8)
