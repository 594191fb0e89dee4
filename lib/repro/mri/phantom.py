"""A BraTS-like brain tumour phantom: MNI152 tissue maps + literature relaxation times + MR signal equations.

Each subject is made in four steps:

1. warp the template's grey-matter / white-matter / CSF fractions with a smooth random deformation and
   resample them to the output voxel size (one warp for all contrasts, as after co-registration);
2. insert a tumour: three nested regions (necrotic core ⊂ enhancing rim ⊂ oedema) around a random centre in
   white matter, with soft edges so that voxels at a border hold a mixture (partial volume);
3. compute each contrast with its signal equation, mixing the signals of the tissues in each voxel by their
   fractions (spin echo for T1 / T2, inversion recovery for FLAIR, gadolinium-shortened T1 for T1CE);
4. multiply by a smooth bias field and an arbitrary scanner gain, add Rician noise, and zero everything
   outside the warped brain mask (BraTS images are skull-stripped with a background of exactly 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np
from scipy import ndimage

from .brats import Subject


@dataclass(frozen=True)
class Tissue:
    """Relaxation times in ms, relative proton density, and gadolinium concentration (mM) after contrast."""

    t1: float
    t2: float
    pd: float
    gd: float = 0.0


# Normal brain at 3 T: WM/GM T1 and T2 from Wansapura et al. (1999); CSF approximate (T1 about 4 s, T2 about
# 2 s); proton densities approximate water fractions. Tumour compartments: approximate values in the ranges
# reported for gliomas (long T1 and T2 in oedema and necrosis); they are illustrative, not measurements.
TISSUES = {
    "wm": Tissue(t1=832.0, t2=79.6, pd=0.69),
    "gm": Tissue(t1=1331.0, t2=110.0, pd=0.80),
    "csf": Tissue(t1=4000.0, t2=2000.0, pd=1.00),
    "necrosis": Tissue(t1=2500.0, t2=300.0, pd=0.90),
    "enhancing": Tissue(t1=1600.0, t2=120.0, pd=0.85, gd=0.3),
    "nonenhancing": Tissue(t1=1500.0, t2=140.0, pd=0.85),
    "oedema": Tissue(t1=1600.0, t2=180.0, pd=0.88),
}
GD_R1 = 3.7  # longitudinal relaxivity of a gadolinium chelate at 3 T, in 1/(mM·s) (approximate)


@dataclass(frozen=True)
class Sequence:
    """A pulse sequence: spin echo (``kind='se'``) or inversion recovery (``'ir'``); times in ms."""

    kind: str
    tr: float
    te: float
    ti: float = 0.0
    contrast_agent: bool = False


def null_inversion_time(t1: float, tr: float) -> float:
    """The inversion time (ms) at which inversion recovery nulls a tissue: 1 − 2e^{−TI/T1} + e^{−TR/T1} = 0."""
    return t1 * math.log(2.0 / (1.0 + math.exp(-tr / t1)))


FLAIR_TR = 9000.0
SEQUENCES = {
    "t1": Sequence("se", tr=500.0, te=10.0),
    "t1ce": Sequence("se", tr=500.0, te=10.0, contrast_agent=True),
    "t2": Sequence("se", tr=4000.0, te=100.0),
    "flair": Sequence("ir", tr=FLAIR_TR, te=120.0, ti=null_inversion_time(TISSUES["csf"].t1, FLAIR_TR)),
}


def effective_t1(tissue: Tissue, seq: Sequence) -> float:
    """T1 in ms, shortened by gadolinium when the sequence is post-contrast: 1/T1' = 1/T1 + r1·C."""
    if not seq.contrast_agent or tissue.gd == 0:
        return tissue.t1
    rate = 1.0 / tissue.t1 + GD_R1 * tissue.gd / 1000.0  # r1·C is per second; rates here are per ms
    return 1.0 / rate


def signal(tissue: Tissue, seq: Sequence) -> float:
    """The noiseless magnitude signal of a pure tissue.

    spin echo: PD·(1 − e^{−TR/T1})·e^{−TE/T2}; inversion recovery: PD·|1 − 2e^{−TI/T1} + e^{−TR/T1}|·e^{−TE/T2}.
    """
    t1 = effective_t1(tissue, seq)
    decay = np.exp(-seq.te / tissue.t2)
    if seq.kind == "se":
        return float(tissue.pd * (1.0 - np.exp(-seq.tr / t1)) * decay)
    if seq.kind == "ir":
        return float(tissue.pd * abs(1.0 - 2.0 * np.exp(-seq.ti / t1) + np.exp(-seq.tr / t1)) * decay)
    raise ValueError(f"unknown sequence kind {seq.kind!r}; allowed: 'se', 'ir'")


def mix_signals(fractions: dict[str, np.ndarray], seq: Sequence, tissues: dict[str, Tissue]) -> np.ndarray:
    """Partial volume: a voxel's signal is the fraction-weighted sum of its tissues' signals."""
    unknown = sorted(set(fractions) - set(tissues))
    if unknown:
        raise ValueError(f"no relaxation parameters for tissues {unknown}; known: {sorted(tissues)}")
    out = np.zeros(next(iter(fractions.values())).shape, dtype=np.float32)
    for name, frac in fractions.items():
        out += np.float32(signal(tissues[name], seq)) * frac
    return out


def add_rician_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of the signal plus complex Gaussian noise: |S + n₁ + i·n₂|, n ~ N(0, σ²)."""
    real = image + rng.normal(0.0, sigma, image.shape)
    imag = rng.normal(0.0, sigma, image.shape)
    return np.hypot(real, imag).astype(np.float32)


def smooth_field(shape: tuple[int, ...], sigma_vox: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth random field with maximum absolute value 1 (white noise through a wide Gaussian)."""
    field_ = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma_vox, mode="wrap")
    return field_ / max(float(np.abs(field_).max()), 1e-12)


@dataclass
class Template:
    """Tissue fractions (1 mm grid, cropped to the brain) and the affine of the cropped grid."""

    fractions: dict[str, np.ndarray]
    mask: np.ndarray
    t1: np.ndarray
    affine: np.ndarray


@lru_cache(maxsize=2)
def load_template(margin: int = 3) -> Template:
    """The MNI152 2009a template from the asset store, as tissue fractions in [0, 1] (CSF is the rest of the
    brain mask, 1 - GM - WM), cropped to the brain plus ``margin`` voxels."""
    from ..assets import load_mni152

    images = load_mni152()
    mask = np.asarray(images["mask"].dataobj) > 0
    maps = {key: np.asarray(images[key].dataobj, dtype=np.float32) for key in ("gm", "wm", "csf")}
    corner = np.maximum(np.argwhere(mask).min(0) - margin, 0)
    end = np.minimum(np.argwhere(mask).max(0) + margin + 1, mask.shape)
    crop = tuple(slice(a, b) for a, b in zip(corner, end))
    for key in maps:
        maps[key] = np.where(mask, maps[key], 0.0)[crop].astype(np.float32)
    t1 = np.asarray(images["t1"].dataobj, dtype=np.float32)[crop]
    affine = images["t1"].affine.copy()
    affine[:3, 3] += affine[:3, :3] @ corner
    return Template(maps, mask[crop], t1, affine)


@dataclass(frozen=True)
class PhantomSettings:
    """What varies between subjects, and how much."""

    voxel_mm: float = 2.0  # output voxel size (isotropic)
    deformation_mm: float = 3.0  # largest displacement of the random warp
    deformation_smoothness_mm: float = 15.0  # Gaussian width of the warp field
    bias: float = 0.15  # bias field: the image is multiplied by exp(bias·f), f smooth in [-1, 1]
    noise: float = 0.02  # Rician σ relative to the 99th percentile of the clean brain signal
    relaxation_jitter: float = 0.03  # per-subject relative spread of every T1, T2 and PD
    lgg_fraction: float = 0.25  # share of tumours without enhancement (the rim is non-enhancing core)
    necrosis_radius_mm: tuple = (4.0, 12.0)
    rim_mm: tuple = (3.0, 7.0)
    oedema_mm: tuple = (6.0, 22.0)
    tissues: dict = field(default_factory=lambda: dict(TISSUES))


def output_grid(template: Template, voxel_mm: float) -> tuple[tuple[int, ...], np.ndarray, np.ndarray]:
    """Shape, affine, and the 1 mm template coordinate of the first output voxel's centre."""
    shape = tuple(int(np.floor(n / voxel_mm)) for n in template.mask.shape)
    start = np.full(3, (voxel_mm - 1.0) / 2.0)  # centre of the first output voxel, in template voxels
    affine = template.affine.copy()
    affine[:3, :3] = template.affine[:3, :3] * voxel_mm
    affine[:3, 3] = template.affine[:3, :3] @ start + template.affine[:3, 3]
    return shape, affine, start


def warp_template(template: Template, settings: PhantomSettings, rng: np.random.Generator):
    """Tissue fractions and brain mask on the output grid, through one smooth random deformation."""
    shape, affine, start = output_grid(template, settings.voxel_mm)
    grid = np.stack(np.meshgrid(*[start[d] + settings.voxel_mm * np.arange(shape[d]) for d in range(3)],
                                indexing="ij")).astype(np.float32)
    if settings.deformation_mm > 0:
        sigma = settings.deformation_smoothness_mm / settings.voxel_mm
        for d in range(3):
            grid[d] += settings.deformation_mm * smooth_field(shape, sigma, rng)
    # anti-aliasing: average the 1 mm maps over about one output voxel before sampling
    pre = (lambda x: ndimage.gaussian_filter(x, 0.4 * settings.voxel_mm)) if settings.voxel_mm > 1 else (lambda x: x)
    fractions = {k: ndimage.map_coordinates(pre(v), grid, order=1, mode="constant")
                 for k, v in template.fractions.items()}
    mask = ndimage.map_coordinates(template.mask.astype(np.float32), grid, order=1, mode="constant") > 0.5
    total = sum(fractions.values())
    for k in fractions:  # fractions of a brain voxel sum to one
        fractions[k] = np.where(mask, fractions[k] / np.maximum(total, 1e-6), 0.0).astype(np.float32)
    return fractions, mask, affine


def tumour_regions(fractions: dict[str, np.ndarray], mask: np.ndarray, settings: PhantomSettings,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Soft memberships g1 ≤ g2 ≤ g3 of the necrotic core, core (+ rim) and whole tumour (+ oedema)."""
    vox = settings.voxel_mm
    r1 = rng.uniform(*settings.necrosis_radius_mm)
    r2 = r1 + rng.uniform(*settings.rim_mm)
    r3 = r2 + rng.uniform(*settings.oedema_mm)
    depth = ndimage.distance_transform_edt(mask) * vox
    candidates = np.argwhere((fractions["wm"] > 0.5) & (depth > r2 + 2 * vox))
    if len(candidates) == 0:
        candidates = np.argwhere(depth >= depth.max() * 0.5)
    centre = candidates[rng.integers(len(candidates))]
    axes = rng.uniform(0.8, 1.25, 3)  # an ellipsoid, not a sphere
    coords = np.indices(mask.shape, dtype=np.float32)
    dist = np.sqrt(sum(((coords[d] - centre[d]) * vox * axes[d]) ** 2 for d in range(3)))
    dist *= 1.0 + 0.15 * smooth_field(mask.shape, 6.0 / vox, rng)  # an irregular outline
    width = 0.35 * vox  # soft edges: partial volume at the borders

    def inside(radius):
        return (1.0 / (1.0 + np.exp((dist - radius) / width))).astype(np.float32)

    g1, g2 = inside(r1) * mask, inside(r2) * mask
    g3 = np.maximum(inside(r3) * (1.0 - fractions["csf"]) * mask, g2)  # oedema spreads in parenchyma
    return g1, g2, g3


def brats_labels(g1: np.ndarray, g2: np.ndarray, g3: np.ndarray, enhancing: bool) -> np.ndarray:
    """BraTS labels from nested memberships: 2 = oedema, 4 = enhancing rim (1 if not enhancing), 1 = core."""
    seg = np.zeros(g1.shape, dtype=np.uint8)
    seg[g3 >= 0.5] = 2
    seg[g2 >= 0.5] = 4 if enhancing else 1
    seg[g1 >= 0.5] = 1
    return seg


def jitter_tissues(tissues: dict[str, Tissue], spread: float, rng: np.random.Generator) -> dict[str, Tissue]:
    def scale():
        return float(np.exp(rng.normal(0.0, spread)))

    return {k: replace(t, t1=t.t1 * scale(), t2=t.t2 * scale(), pd=t.pd * scale()) for k, t in tissues.items()}


def simulate_subject(subject_id: str, rng: np.random.Generator, settings: PhantomSettings = PhantomSettings(),
                     template: Template | None = None, with_tumour: bool = True) -> Subject:
    """One BraTS-like subject (four contrasts, label map, affine)."""
    template = load_template() if template is None else template
    fractions, mask, affine = warp_template(template, settings, rng)
    tissues = jitter_tissues(settings.tissues, settings.relaxation_jitter, rng)
    seg = np.zeros(mask.shape, dtype=np.uint8)
    if with_tumour:
        enhancing = rng.uniform() >= settings.lgg_fraction
        g1, g2, g3 = tumour_regions(fractions, mask, settings, rng)
        normal = 1.0 - g3
        fractions = {k: v * normal for k, v in fractions.items()}
        fractions.update(necrosis=g1, oedema=g3 - g2, **{"enhancing" if enhancing else "nonenhancing": g2 - g1})
        seg = brats_labels(g1, g2, g3, enhancing)
    images = {}
    for name, seq in SEQUENCES.items():
        clean = mix_signals(fractions, seq, tissues)
        sigma = settings.noise * float(np.percentile(clean[mask], 99))
        if settings.bias > 0:
            clean *= np.exp(settings.bias * smooth_field(mask.shape, 40.0 / settings.voxel_mm, rng))
        noisy = add_rician_noise(clean, sigma, rng) if sigma > 0 else clean
        gain = rng.uniform(500.0, 1500.0)  # arbitrary scanner units, as in real BraTS files
        images[name] = np.where(mask, noisy * gain, 0.0).astype(np.float32)
    return Subject(subject_id, images, seg, affine)
