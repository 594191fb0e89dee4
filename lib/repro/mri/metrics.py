"""Image and segmentation metrics: MSE over a foreground, Dice over the BraTS tumour regions."""

from __future__ import annotations

import numpy as np

# BraTS evaluation regions, as sets of labels
REGIONS = {"whole": (1, 2, 4), "core": (1, 4), "enhancing": (4,)}


def scale01(image: np.ndarray) -> np.ndarray:
    """Min-max scaling to [0, 1] (a constant image becomes all zeros)."""
    image = np.asarray(image, dtype=np.float32)
    low, high = float(image.min()), float(image.max())
    return np.zeros_like(image) if high <= low else (image - low) / (high - low)


def union_foreground(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Voxels above the minimum in either image (the repository's evaluation foreground)."""
    return (a > a.min()) | (b > b.min())


def intersection_foreground(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Voxels above the minimum in both images (the repository's training foreground)."""
    return (a > a.min()) & (b > b.min())


def mse(truth: np.ndarray, estimate: np.ndarray, mask: np.ndarray) -> float:
    """Mean squared error over the voxels of ``mask`` (NaN for an empty mask)."""
    if truth.shape != estimate.shape or truth.shape != mask.shape:
        raise ValueError(f"shapes differ: truth {truth.shape}, estimate {estimate.shape}, mask {mask.shape}")
    if not mask.any():
        return float("nan")
    diff = truth[mask].astype(np.float64) - estimate[mask].astype(np.float64)
    return float(np.mean(diff**2))


def region_mask(seg: np.ndarray, region: str) -> np.ndarray:
    if region not in REGIONS:
        raise ValueError(f"unknown region {region!r}; choose one of {', '.join(REGIONS)}")
    return np.isin(seg, REGIONS[region])


def dice(a: np.ndarray, b: np.ndarray, empty: float = 1.0) -> float:
    """Dice 2|A∩B| / (|A|+|B|) of two boolean masks. Both empty: ``empty`` (1.0, as BraTS scores a correct
    "no enhancing tumour")."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"masks differ in shape: {a.shape} vs {b.shape}")
    total = int(a.sum()) + int(b.sum())
    if total == 0:
        return float(empty)
    return 2.0 * int(np.logical_and(a, b).sum()) / total


def region_dice(truth: np.ndarray, prediction: np.ndarray) -> dict[str, float]:
    """Dice of whole tumour, tumour core and enhancing tumour between two BraTS label maps."""
    return {name: dice(region_mask(truth, name), region_mask(prediction, name)) for name in REGIONS}
