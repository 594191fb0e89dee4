"""BraTS-format folders: one folder per subject, ``<id>/<id>_<contrast>.nii.gz`` plus ``<id>_seg.nii.gz``.

The same reader serves the simulated subjects of this chapter and real BraTS 2019-2021 folders, so the
chapter runs unchanged on real data (``data_dir=``). Every problem is reported as a ``ValueError`` that
names the subject and the file, because a half-loaded cohort is worse than none.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

CONTRASTS = ("t1", "t1ce", "t2", "flair")
BRATS_LABELS = (0, 1, 2, 4)  # background, necrotic / non-enhancing core, oedema, enhancing tumour


@dataclass
class Subject:
    """One subject: the four contrasts (float32 arrays of one shape), the label map and the affine."""

    subject_id: str
    images: dict[str, np.ndarray]
    seg: np.ndarray
    affine: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        return self.seg.shape

    @property
    def brain(self) -> np.ndarray:
        """Skull-stripped brain: voxels where any contrast is non-zero (BraTS backgrounds are exactly 0)."""
        return np.any([img != 0 for img in self.images.values()], axis=0)


def subject_path(folder: Path, subject_id: str, contrast: str) -> Path:
    return Path(folder) / subject_id / f"{subject_id}_{contrast}.nii.gz"


def write_subject(folder: Path, subject: Subject) -> Path:
    """Write a subject as BraTS does: float32 contrasts and a uint8 label map, all with the same affine."""
    import nibabel as nib

    check_labels(subject.seg, subject.subject_id)
    out = Path(folder) / subject.subject_id
    out.mkdir(parents=True, exist_ok=True)
    for contrast in CONTRASTS:
        if contrast not in subject.images:
            raise ValueError(f"subject {subject.subject_id}: no {contrast!r} image to write; need {CONTRASTS}")
        image = nib.Nifti1Image(np.asarray(subject.images[contrast], dtype=np.float32), subject.affine)
        image.header.set_xyzt_units("mm")
        nib.save(image, subject_path(folder, subject.subject_id, contrast))
    seg = nib.Nifti1Image(subject.seg.astype(np.uint8), subject.affine)
    seg.header.set_xyzt_units("mm")
    nib.save(seg, subject_path(folder, subject.subject_id, "seg"))
    return out


def check_labels(seg: np.ndarray, subject_id: str) -> None:
    found = np.unique(seg)
    bad = sorted(set(found.tolist()) - set(BRATS_LABELS))
    if bad:
        raise ValueError(f"subject {subject_id}: label map holds values {bad}; BraTS labels are {BRATS_LABELS}")


def read_subject(folder: Path, subject_id: str, atol: float = 1e-3) -> Subject:
    """Read one subject folder, checking that every file exists and all share one shape and affine."""
    import nibabel as nib

    images, affine, shape, first = {}, None, None, None
    for name in (*CONTRASTS, "seg"):
        path = subject_path(folder, subject_id, name)
        if not path.is_file():
            raise ValueError(f"subject {subject_id}: missing {name} image, expected the file {path}")
        nii = nib.load(path)
        data = np.asarray(nii.dataobj, dtype=np.float32)
        if data.ndim != 3:
            raise ValueError(f"subject {subject_id}: {path.name} has {data.ndim} dimensions, expected 3")
        if shape is None:
            shape, affine, first = data.shape, nii.affine, path.name
        elif data.shape != shape:
            raise ValueError(f"subject {subject_id}: {path.name} has shape {data.shape} but {first} has {shape}")
        elif not np.allclose(nii.affine, affine, atol=atol):
            raise ValueError(f"subject {subject_id}: the affine of {path.name} differs from that of {first}")
        images[name] = data
    seg = np.rint(images.pop("seg")).astype(np.uint8)
    check_labels(seg, subject_id)
    return Subject(subject_id, images, seg, np.asarray(affine, dtype=np.float64))


def list_subjects(folder: Path) -> list[str]:
    """Subject ids of a BraTS folder: the sub-folders that hold a ``<id>_t1.nii.gz`` (sorted)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"data_dir {folder} is not a folder of BraTS subject folders")
    ids = sorted(p.name for p in folder.iterdir() if p.is_dir() and (p / f"{p.name}_t1.nii.gz").is_file())
    if not ids:
        raise ValueError(f"no BraTS subject folders (<id>/<id>_t1.nii.gz) found in {folder}")
    return ids


def read_cohort(folder: Path, subject_ids: list[str] | None = None) -> list[Subject]:
    """Read several subjects; they must share one shape, since the methods compare voxel by voxel."""
    ids = list_subjects(folder) if subject_ids is None else subject_ids
    subjects = [read_subject(folder, i) for i in ids]
    for s in subjects[1:]:
        if s.shape != subjects[0].shape:
            raise ValueError(f"subject {s.subject_id} has shape {s.shape} but {subjects[0].subject_id} has "
                             f"{subjects[0].shape}; co-register the cohort first")
    return subjects
