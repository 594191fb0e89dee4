"""BrainClustering (Baldini et al.): T1 → T2 by matching intensity clusters, re-implemented in NumPy/SciPy.

Training, per training subject: cluster the T1 and the T2 intensities of the shared foreground on two levels
(main clusters, each split into sub-clusters), match main clusters by voxel overlap with the Hungarian
algorithm, match sub-clusters inside each matched pair the same way, and write "mean T1 of the sub-cluster →
mean T2 of its partner" into a lookup table per main cluster. Inference: cluster the query T1 into main
clusters and read each voxel's T2 off its cluster's table, interpolating between keys, then median-filter.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

KMEANS_METHODS = ("lloyd", "exact")
SMOOTHING = ("median", "average", "none")


# ----------------------------------------------------------------------------------------------- preprocessing
def remove_outliers(t1: np.ndarray) -> np.ndarray:
    """The repository's source preprocessing: z-score over the foreground, bright outliers (above Q3 + 1.5 IQR)
    set to the image minimum (they are skull-stripping leftovers), then min-max scaling to [0, 1]."""
    t1 = np.asarray(t1, dtype=np.float32)
    fg = t1 > t1.min()
    if not fg.any():
        raise ValueError("the T1 image is constant: no foreground to normalise")
    z = (t1 - t1[fg].mean()) / max(float(t1[fg].std()), 1e-12)
    z = np.where(fg, z, z[~fg].min() if (~fg).any() else z.min())
    q1, q3 = np.percentile(z[fg], [25, 75])
    z = np.where(z > q3 + 1.5 * (q3 - q1), z.min(), z)
    return min_max(z)


def min_max(image: np.ndarray) -> np.ndarray:
    low, high = float(image.min()), float(image.max())
    return np.zeros_like(image, dtype=np.float32) if high <= low else ((image - low) / (high - low)).astype(np.float32)


# -------------------------------------------------------------------------------------------- 1-D k-means
def kmeans_1d(values: np.ndarray, k: int, method: str = "lloyd", max_iter: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """1-D k-means: (labels, centres) with centres ascending and labels numbered in that order.

    ``lloyd``: Lloyd's algorithm from quantile starts. In 1-D every cluster is an interval of the sorted values,
    so one iteration is a ``searchsorted`` plus prefix sums (cost O(k log n) after one sort).
    ``exact``: the optimal clustering by dynamic programming over the distinct values (O(k m²) for m distinct
    values; meant for small inputs and for checking ``lloyd``).
    Fewer than k distinct values give one cluster per distinct value.
    """
    if method not in KMEANS_METHODS:
        raise ValueError(f"unknown k-means method {method!r}; choose one of {KMEANS_METHODS}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        raise ValueError("k-means of an empty set of values")
    distinct, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    if len(distinct) <= k:
        return inverse.astype(np.int64), distinct
    if method == "exact":
        bounds = exact_breaks(distinct, counts.astype(np.float64), k)
    else:
        bounds = lloyd_breaks(distinct, counts.astype(np.float64), k, max_iter)
    # bounds[i] is the first distinct value index of cluster i + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [len(distinct)]])
    keep = ends > starts
    starts, ends = starts[keep], ends[keep]
    wsum = np.concatenate([[0.0], np.cumsum(distinct * counts)])
    wcnt = np.concatenate([[0.0], np.cumsum(counts)])
    centres = (wsum[ends] - wsum[starts]) / (wcnt[ends] - wcnt[starts])
    distinct_label = np.searchsorted(ends, np.arange(len(distinct)), side="right")
    return distinct_label[inverse].astype(np.int64), centres


def lloyd_breaks(x: np.ndarray, w: np.ndarray, k: int, max_iter: int) -> np.ndarray:
    cw = np.cumsum(w)
    wsum = np.concatenate([[0.0], np.cumsum(x * w)])
    wcnt = np.concatenate([[0.0], cw])
    quantiles = (np.arange(k) + 0.5) / k * cw[-1]
    centres = x[np.minimum(np.searchsorted(cw, quantiles), len(x) - 1)].astype(np.float64)
    breaks = None
    for _ in range(max_iter):
        new_breaks = np.searchsorted(x, (centres[:-1] + centres[1:]) / 2.0, side="right")
        if breaks is not None and np.array_equal(new_breaks, breaks):
            break
        breaks = new_breaks
        starts, ends = np.concatenate([[0], breaks]), np.concatenate([breaks, [len(x)]])
        n = wcnt[ends] - wcnt[starts]
        centres = np.where(n > 0, (wsum[ends] - wsum[starts]) / np.maximum(n, 1e-300), centres)
        centres = np.sort(centres)
    return breaks


def exact_breaks(x: np.ndarray, w: np.ndarray, k: int, max_distinct: int = 4000) -> np.ndarray:
    m = len(x)
    if m > max_distinct:
        raise ValueError(f"exact 1-D k-means is O(k m^2): {m} distinct values > {max_distinct}; use method='lloyd'")
    s1 = np.concatenate([[0.0], np.cumsum(w * x)])
    s2 = np.concatenate([[0.0], np.cumsum(w * x * x)])
    s0 = np.concatenate([[0.0], np.cumsum(w)])
    i, j = np.triu_indices(m + 1, 1)  # segment x[i:j]
    cost = np.full((m + 1, m + 1), np.inf)
    cost[i, j] = s2[j] - s2[i] - (s1[j] - s1[i]) ** 2 / (s0[j] - s0[i])
    best = cost[0].copy()  # best[j]: optimal cost of x[:j] with one cluster
    argbest = []
    for _ in range(1, k):
        total = best[:, None] + cost  # split at i, last cluster x[i:j]
        arg = np.argmin(total, axis=0)
        best = total[arg, np.arange(m + 1)]
        argbest.append(arg)
    breaks, end = [], m
    for arg in reversed(argbest):
        end = int(arg[end])
        breaks.append(end)
    return np.array(sorted(breaks), dtype=np.int64)


@dataclass
class TwoLevelClusters:
    """Main-cluster label and sub-cluster label (within its main cluster) per value, and sub-cluster means."""

    main: np.ndarray
    sub: np.ndarray
    sub_centres: list[np.ndarray]


def leveled_kmeans(values: np.ndarray, k_main: int, k_sub: int, method: str = "lloyd") -> TwoLevelClusters:
    """Two-level ("leveled") k-means: k_main clusters, then each split into k_sub sub-clusters."""
    main, _ = kmeans_1d(values, k_main, method)
    sub = np.zeros_like(main)
    centres = []
    for c in range(int(main.max()) + 1):
        inside = main == c
        labels, cent = kmeans_1d(values[inside], k_sub, method)
        sub[inside] = labels
        centres.append(cent)
    return TwoLevelClusters(main, sub, centres)


# -------------------------------------------------------------------------------------------- matching
def contingency(a: np.ndarray, b: np.ndarray, na: int, nb: int) -> np.ndarray:
    """Counts of co-membership: entry (i, j) is the number of voxels in cluster i of a and cluster j of b."""
    return np.bincount(a * nb + b, minlength=na * nb).reshape(na, nb)


def match_clusters(table: np.ndarray) -> list[tuple[int, int]]:
    """Hungarian matching that maximises the total overlap; pairs that share no voxel are dropped."""
    rows, cols = linear_sum_assignment(table, maximize=True)
    return [(int(r), int(c)) for r, c in zip(rows, cols) if table[r, c] > 0]


def subject_entries(t1: np.ndarray, t2: np.ndarray, k_main: int, k_sub: int,
                    method: str = "lloyd") -> list[tuple[int, float, float]]:
    """The lookup-table entries (main cluster, mean T1, mean T2) that one training subject contributes.

    ``t1`` and ``t2`` are preprocessed images in [0, 1]; the foreground is where both are above their minimum.
    """
    fg = (t1 > t1.min()) & (t2 > t2.min())
    x, y = t1[fg], t2[fg]
    cx, cy = leveled_kmeans(x, k_main, k_sub, method), leveled_kmeans(y, k_main, k_sub, method)
    n_main = max(len(cx.sub_centres), len(cy.sub_centres))
    entries = []
    for i, j in match_clusters(contingency(cx.main, cy.main, n_main, n_main)):
        shared = (cx.main == i) & (cy.main == j)
        na, nb = len(cx.sub_centres[i]), len(cy.sub_centres[j])
        for a, b in match_clusters(contingency(cx.sub[shared], cy.sub[shared], na, nb)):
            entries.append((i, float(cx.sub_centres[i][a]), float(cy.sub_centres[j][b])))
    return entries


# -------------------------------------------------------------------------------------------- lookup table
@dataclass
class LookupTable:
    """Per main cluster, a sorted map T1 key → T2 value. Keys are rounded to ``key_decimals`` so that
    entries from different subjects can meet; repeated keys are averaged with a running mean.
    ``abs_bug=True`` reproduces the repository's update mean += |y − mean| / n (never decreases)."""

    key_decimals: int = 2
    abs_bug: bool = False
    maps: dict = field(default_factory=dict)

    def add(self, main: int, key: float, value: float) -> None:
        slot = self.maps.setdefault(main, {})
        key = round(key, self.key_decimals)
        mean, count = slot.get(key, (0.0, 0))
        count += 1
        step = value - mean
        mean += (abs(step) if self.abs_bug else step) / count
        slot[key] = (mean, count)

    def arrays(self, main: int) -> tuple[np.ndarray, np.ndarray]:
        slot = self.maps.get(main) or {k: v for m in self.maps.values() for k, v in m.items()}
        keys = np.array(sorted(slot))
        return keys, np.array([slot[k][0] for k in keys])

    def lookup(self, values: np.ndarray, main: np.ndarray) -> np.ndarray:
        """Linear interpolation between keys; beyond the key range, y_end · v / x_end (the repository's rule)."""
        out = np.zeros(values.shape, dtype=np.float64)
        for c in np.unique(main):
            keys, vals = self.arrays(int(c))
            v = values[main == c]
            y = np.interp(v, keys, vals)
            low, high = v < keys[0], v > keys[-1]
            y[low] = vals[0] * v[low] / keys[0] if keys[0] > 0 else vals[0]
            y[high] = vals[-1] * v[high] / keys[-1] if keys[-1] > 0 else vals[-1]
            out[main == c] = y
        return out


def smooth(image: np.ndarray, how: str) -> np.ndarray:
    """3×3 filter in each axial slice (the last axis indexes slices)."""
    if how == "median":
        return ndimage.median_filter(image, size=(3, 3, 1))
    if how == "average":
        return ndimage.uniform_filter(image, size=(3, 3, 1))
    if how == "none":
        return image
    raise ValueError(f"unknown smoothing {how!r}; choose one of {SMOOTHING}")


@dataclass
class BrainClustering:
    """The clustering synthesiser. ``fit`` stores each training subject's entries; ``predict`` builds a table
    from all subjects, or (search mode, ``n_similar``) from the n training T1s closest to the query in MSE."""

    main_clusters: int = 3
    sub_clusters: int = 201
    method: str = "lloyd"
    smoothing: str = "median"
    abs_bug: bool = False
    key_decimals: int = 2
    entries: list = field(default_factory=list)
    train_t1: list = field(default_factory=list)

    def __post_init__(self):
        if self.method not in KMEANS_METHODS:
            raise ValueError(f"method must be one of {KMEANS_METHODS}, got {self.method!r}")
        if self.smoothing not in SMOOTHING:
            raise ValueError(f"smoothing must be one of {SMOOTHING}, got {self.smoothing!r}")
        if not 1 <= self.main_clusters <= self.sub_clusters:
            raise ValueError(f"need 1 <= main_clusters <= sub_clusters, got {self.main_clusters}, {self.sub_clusters}")

    @property
    def k_sub(self) -> int:
        return max(self.sub_clusters // self.main_clusters, 1)

    def fit(self, t1s, t2s, progress=None) -> BrainClustering:
        """Raw T1 and T2 volumes of the training subjects (preprocessed here as in the repository)."""
        for t1, t2 in zip(t1s, t2s):
            t1p, t2p = remove_outliers(t1), min_max(np.asarray(t2, dtype=np.float32))
            self.entries.append(subject_entries(t1p, t2p, self.main_clusters, self.k_sub, self.method))
            self.train_t1.append(t1p)
            if progress is not None:
                progress.update(1)
        return self

    def table(self, subjects=None) -> LookupTable:
        table = LookupTable(self.key_decimals, self.abs_bug)
        for s in range(len(self.entries)) if subjects is None else subjects:
            for main, key, value in self.entries[s]:
                table.add(main, key, value)
        return table

    def most_similar(self, t1p: np.ndarray, n: int) -> list[int]:
        errors = [float(np.mean((t1p - other) ** 2)) for other in self.train_t1]
        return [int(i) for i in np.argsort(errors, kind="stable")[:n]]

    def predict(self, t1: np.ndarray, n_similar: int | None = None) -> np.ndarray:
        """Synthetic T2 in [0, 1] for a raw T1 volume; 0 outside the T1's foreground before smoothing."""
        if not self.entries:
            raise ValueError("BrainClustering.predict before fit")
        t1p = remove_outliers(t1)
        subjects = None if n_similar is None else self.most_similar(t1p, n_similar)
        table = self.table(subjects)
        fg = t1p > t1p.min()
        main, _ = kmeans_1d(t1p[fg], self.main_clusters, self.method)
        out = np.zeros(t1p.shape, dtype=np.float32)
        out[fg] = np.clip(table.lookup(t1p[fg].astype(np.float64), main), 0.0, None)
        return smooth(out, self.smoothing)


# -------------------------------------------------------------------------------------------- baselines
def random_t2(t1: np.ndarray, pool: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random baseline: every foreground voxel of the query gets an independent draw from ``pool`` (the pooled
    [0, 1]-scaled training T2 values inside the brain); the background stays 0."""
    out = np.zeros(t1.shape, dtype=np.float32)
    fg = t1 > t1.min()
    out[fg] = rng.choice(np.asarray(pool, dtype=np.float32), size=int(fg.sum()), replace=True)
    return out


def complement_t2(t1: np.ndarray) -> np.ndarray:
    """The repository's "complementary" reference: ŷ = (min + max) − x over the preprocessed T1's foreground."""
    t1p = remove_outliers(t1)
    fg = t1p > t1p.min()
    out = np.zeros(t1p.shape, dtype=np.float32)
    out[fg] = t1p[fg].min() + t1p[fg].max() - t1p[fg]
    return out
