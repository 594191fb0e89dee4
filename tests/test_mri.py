"""Chapter 10 library: BraTS I/O, the phantom, BrainClustering, Pix2Pix / DeepMedic shapes, metrics."""

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans

from repro.mri import brats, clustering, deepmedic, metrics, phantom, pix2pix

AFFINE = np.array([[2.0, 0, 0, -90], [0, 2.0, 0, -126], [0, 0, 2.0, -72], [0, 0, 0, 1]])


def toy_subject(subject_id="BraTS_toy_001", shape=(12, 10, 8), seed=0) -> brats.Subject:
    rng = np.random.default_rng(seed)
    images = {c: rng.random(shape).astype(np.float32) * 100 for c in brats.CONTRASTS}
    seg = np.zeros(shape, dtype=np.uint8)
    seg[3:9, 3:7, 2:6] = 2
    seg[4:8, 4:6, 3:5] = 4
    seg[5:7, 4:6, 3:5] = 1
    return brats.Subject(subject_id, images, seg, AFFINE.copy())


# ------------------------------------------------------------------------------------------------ BraTS I/O
def test_nifti_round_trip_keeps_data_affine_and_labels(tmp_path):
    subject = toy_subject()
    brats.write_subject(tmp_path, subject)
    assert (tmp_path / subject.subject_id / f"{subject.subject_id}_t1ce.nii.gz").is_file()
    back = brats.read_subject(tmp_path, subject.subject_id)
    for c in brats.CONTRASTS:
        np.testing.assert_array_equal(back.images[c], subject.images[c])
    np.testing.assert_array_equal(back.seg, subject.seg)
    np.testing.assert_allclose(back.affine, AFFINE)
    assert brats.list_subjects(tmp_path) == [subject.subject_id]


def test_missing_contrast_is_a_clear_error_naming_subject_and_file(tmp_path):
    subject = toy_subject()
    brats.write_subject(tmp_path, subject)
    (tmp_path / subject.subject_id / f"{subject.subject_id}_flair.nii.gz").unlink()
    with pytest.raises(ValueError, match=r"BraTS_toy_001.*flair.*_flair\.nii\.gz"):
        brats.read_subject(tmp_path, subject.subject_id)


def test_mismatched_shape_or_affine_is_a_clear_error(tmp_path):
    subject = toy_subject()
    brats.write_subject(tmp_path, subject)
    path = brats.subject_path(tmp_path, subject.subject_id, "t2")
    nib.save(nib.Nifti1Image(np.zeros((12, 10, 9), np.float32), AFFINE), path)
    with pytest.raises(ValueError, match=r"BraTS_toy_001.*_t2\.nii\.gz has shape \(12, 10, 9\)"):
        brats.read_subject(tmp_path, subject.subject_id)
    shifted = AFFINE.copy()
    shifted[0, 3] += 5
    nib.save(nib.Nifti1Image(subject.images["t2"], shifted), path)
    with pytest.raises(ValueError, match=r"BraTS_toy_001.*affine of BraTS_toy_001_t2\.nii\.gz"):
        brats.read_subject(tmp_path, subject.subject_id)


def test_non_brats_labels_and_empty_folders_are_rejected(tmp_path):
    subject = toy_subject()
    subject.seg[0, 0, 0] = 3
    with pytest.raises(ValueError, match=r"values \[3\]; BraTS labels are \(0, 1, 2, 4\)"):
        brats.write_subject(tmp_path, subject)
    with pytest.raises(ValueError, match="no BraTS subject folders"):
        brats.list_subjects(tmp_path)


# ------------------------------------------------------------------------------------------------ phantom
@pytest.mark.parametrize("name", ["t1", "t1ce", "t2", "flair"])
def test_single_tissue_phantom_follows_the_closed_form_signal(name):
    seq = phantom.SEQUENCES[name]
    for tissue in phantom.TISSUES.values():
        image = phantom.mix_signals({"x": np.ones((3, 3, 3), np.float32)}, seq, {"x": tissue})
        t1 = tissue.t1
        if seq.contrast_agent and tissue.gd:
            t1 = 1.0 / (1.0 / tissue.t1 + phantom.GD_R1 * tissue.gd / 1000.0)
        e2 = np.exp(-seq.te / tissue.t2)
        if seq.kind == "se":
            expected = tissue.pd * (1 - np.exp(-seq.tr / t1)) * e2
        else:
            expected = tissue.pd * abs(1 - 2 * np.exp(-seq.ti / t1) + np.exp(-seq.tr / t1)) * e2
        np.testing.assert_allclose(image, expected, rtol=1e-6)


def test_null_inversion_time_known_answer():
    # 1 - 2 exp(-TI/T1) + exp(-TR/T1) = 0 for T1 = 4 s, TR = 9 s: TI = 4000 ln(2 / (1 + e^-2.25)) = 2371.76 ms
    assert phantom.null_inversion_time(4000.0, 9000.0) == pytest.approx(2371.76, abs=0.01)
    # with full recovery between inversions (TR >> T1), the null is at T1 ln 2
    assert phantom.null_inversion_time(1000.0, 1e6) == pytest.approx(1000.0 * np.log(2))


def test_signal_equations_give_the_expected_contrasts():
    s = {name: {t: phantom.signal(phantom.TISSUES[t], seq) for t in phantom.TISSUES}
         for name, seq in phantom.SEQUENCES.items()}
    assert s["t1"]["wm"] > s["t1"]["gm"] > s["t1"]["csf"]  # T1: white matter brightest
    assert s["t2"]["csf"] > s["t2"]["gm"] > s["t2"]["wm"]  # T2: fluid brightest
    assert s["flair"]["csf"] < 1e-9 * s["flair"]["wm"]  # FLAIR nulls the CSF ...
    assert s["flair"]["oedema"] == max(s["flair"].values())  # ... and shows oedema brightest
    assert s["t1ce"]["enhancing"] > 1.5 * s["t1"]["enhancing"]  # gadolinium shortens T1
    assert s["t1ce"]["wm"] == s["t1"]["wm"]  # no uptake behind an intact blood-brain barrier


def test_partial_volume_mixes_signals_linearly():
    seq = phantom.SEQUENCES["t2"]
    half = np.full((2, 2, 2), 0.5, np.float32)
    mixed = phantom.mix_signals({"wm": half, "csf": half}, seq, phantom.TISSUES)
    expected = 0.5 * (phantom.signal(phantom.TISSUES["wm"], seq) + phantom.signal(phantom.TISSUES["csf"], seq))
    np.testing.assert_allclose(mixed, expected, rtol=1e-6)
    with pytest.raises(ValueError, match="no relaxation parameters for tissues"):
        phantom.mix_signals({"bone": half}, seq, phantom.TISSUES)


def test_rician_noise_of_zero_signal_has_rayleigh_mean():
    sigma = 2.0
    noisy = phantom.add_rician_noise(np.zeros(200_000, np.float32), sigma, np.random.default_rng(0))
    assert noisy.min() >= 0
    assert noisy.mean() == pytest.approx(sigma * np.sqrt(np.pi / 2), rel=0.01)
    # large signal: Rician ≈ Gaussian around the signal
    strong = phantom.add_rician_noise(np.full(200_000, 100.0, np.float32), sigma, np.random.default_rng(1))
    assert strong.mean() == pytest.approx(100.0 + sigma**2 / 200, abs=0.03)
    assert strong.std() == pytest.approx(sigma, rel=0.02)


def test_brats_labels_are_nested():
    coords = np.indices((21, 21, 21)) - 10
    dist = np.sqrt((coords**2).sum(0))
    g1, g2, g3 = [(dist < r).astype(np.float32) for r in (3, 6, 9)]
    seg = phantom.brats_labels(g1, g2, g3, enhancing=True)
    assert set(np.unique(seg)) == {0, 1, 2, 4}
    assert seg[10, 10, 10] == 1 and seg[10, 10, 15] == 4 and seg[10, 10, 18] == 2 and seg[0, 0, 0] == 0
    assert set(np.unique(phantom.brats_labels(g1, g2, g3, enhancing=False))) == {0, 1, 2}


@pytest.fixture(scope="module")
def small_template():
    """A synthetic 1 mm 'template' (concentric WM / GM / CSF shells), so phantom tests need no asset."""
    coords = np.indices((48, 52, 44)) - np.array([24, 26, 22])[:, None, None, None]
    r = np.sqrt((coords**2).sum(0))
    wm = (r < 12).astype(np.float32)
    gm = ((r >= 12) & (r < 18)).astype(np.float32)
    csf = ((r >= 18) & (r < 21)).astype(np.float32)
    return phantom.Template({"gm": gm, "wm": wm, "csf": csf}, r < 21, 100 * wm + 60 * gm, np.eye(4))


def test_simulated_subject_is_brats_like(small_template):
    settings = phantom.PhantomSettings(voxel_mm=2.0, necrosis_radius_mm=(2, 3), rim_mm=(2, 3), oedema_mm=(3, 4),
                                       lgg_fraction=0.0)
    subject = phantom.simulate_subject("S", np.random.default_rng(0), settings, small_template)
    assert subject.shape == (24, 26, 22)
    assert set(np.unique(subject.seg)) <= {0, 1, 2, 4} and (subject.seg == 4).any()
    brain = subject.brain
    assert not subject.seg[~brain].any()  # tumour inside the brain
    for img in subject.images.values():
        assert img.shape == subject.shape and (img[~brain] == 0).all() and (img[brain] > 0).all()
    # nesting: the necrotic core (1) never touches healthy tissue (0) directly
    from scipy import ndimage

    core = subject.seg == 1
    ring = ndimage.binary_dilation(core) & ~core
    assert core.any() and not (subject.seg[ring] == 0).any()
    np.testing.assert_allclose(subject.affine[:3, :3], 2 * np.eye(3))


def test_phantom_is_deterministic_given_the_seed(small_template):
    a = phantom.simulate_subject("S", np.random.default_rng(3), template=small_template)
    b = phantom.simulate_subject("S", np.random.default_rng(3), template=small_template)
    np.testing.assert_array_equal(a.images["t2"], b.images["t2"])
    np.testing.assert_array_equal(a.seg, b.seg)


# ------------------------------------------------------------------------------------------------ metrics
def test_dice_known_answers():
    a = np.zeros((4, 4), bool)
    a[:2] = True
    assert metrics.dice(a, a) == 1.0
    assert metrics.dice(a, ~a) == 0.0
    assert metrics.dice(np.zeros_like(a), np.zeros_like(a)) == 1.0  # both empty: documented as 1
    assert metrics.dice(np.zeros_like(a), np.zeros_like(a), empty=float("nan")) != 0.0
    b = np.zeros_like(a)
    b[:1] = True
    assert metrics.dice(a, b) == pytest.approx(2 * 4 / (8 + 4))
    with pytest.raises(ValueError, match="shape"):
        metrics.dice(a, a[:2])


def test_region_dice_uses_brats_regions():
    truth = np.array([0, 1, 2, 4, 4])
    pred = np.array([0, 4, 2, 4, 0])
    d = metrics.region_dice(truth, pred)
    assert d["whole"] == pytest.approx(2 * 3 / (4 + 3))
    assert d["core"] == pytest.approx(2 * 2 / (3 + 2))
    assert d["enhancing"] == pytest.approx(2 * 1 / (2 + 2))


def test_mse_over_union_foreground():
    t = np.array([0.0, 0.5, 1.0, 0.0])
    e = np.array([0.0, 0.0, 1.0, 0.5])
    fg = metrics.union_foreground(t, e)
    assert fg.tolist() == [False, True, True, True]
    assert metrics.mse(t, e, fg) == pytest.approx(0.5 / 3)
    assert np.isnan(metrics.mse(t, e, np.zeros(4, bool)))


# ------------------------------------------------------------------------------------------------ clustering
def test_kmeans_1d_exact_is_optimal_and_lloyd_agrees_with_sklearn():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(m, 0.2, 200) for m in (0, 2, 5, 9)])
    for k in (2, 3, 4, 6):
        l_exact, c_exact = clustering.kmeans_1d(x, k, "exact")
        l_lloyd, c_lloyd = clustering.kmeans_1d(x, k, "lloyd")
        sk = KMeans(k, n_init=10, random_state=0).fit(x[:, None]).inertia_
        exact = ((x - c_exact[l_exact]) ** 2).sum()
        assert exact <= sk + 1e-6
        assert ((x - c_lloyd[l_lloyd]) ** 2).sum() <= 1.05 * sk
        assert np.all(np.diff(c_exact) > 0)
    labels, centres = clustering.kmeans_1d(x, 4)
    np.testing.assert_allclose(np.sort(centres), [0, 2, 5, 9], atol=0.1)
    assert np.array_equal(labels, np.repeat(np.arange(4), 200))


def test_kmeans_1d_with_few_distinct_values_and_bad_input():
    labels, centres = clustering.kmeans_1d(np.array([3.0, 1.0, 3.0]), 5)
    assert centres.tolist() == [1.0, 3.0] and labels.tolist() == [1, 0, 1]
    with pytest.raises(ValueError, match="unknown k-means method 'fast'"):
        clustering.kmeans_1d(np.arange(5.0), 2, "fast")


def test_hungarian_matching_maximises_overlap():
    table = np.array([[1, 9, 0], [8, 1, 2], [0, 3, 7]])
    assert clustering.match_clusters(table) == [(0, 1), (1, 0), (2, 2)]
    a, b = np.array([0, 0, 1, 1, 2]), np.array([2, 2, 0, 0, 1])
    cont = clustering.contingency(a, b, 3, 3)
    assert cont.tolist() == [[0, 0, 2], [2, 0, 0], [0, 1, 0]]
    rows, cols = linear_sum_assignment(-cont)
    assert clustering.match_clusters(cont) == list(zip(rows.tolist(), cols.tolist()))
    assert clustering.match_clusters(np.array([[5, 0], [0, 0]])) == [(0, 0)]  # no pair without overlap


def test_running_mean_and_the_repository_abs_bug():
    good, buggy = clustering.LookupTable(), clustering.LookupTable(abs_bug=True)
    for v in (0.8, 0.2, 0.5):
        good.add(0, 0.3, v)
        buggy.add(0, 0.3, v)
    assert good.arrays(0)[1][0] == pytest.approx(0.5)
    assert buggy.arrays(0)[1][0] > 0.5  # |y - mean| never lets the mean go down


def test_lookup_interpolates_and_extrapolates_proportionally():
    table = clustering.LookupTable()
    for key, value in ((0.2, 0.6), (0.4, 0.2)):
        table.add(0, key, value)
    out = table.lookup(np.array([0.3, 0.1, 0.8]), np.zeros(3, int))
    np.testing.assert_allclose(out, [0.4, 0.6 * 0.1 / 0.2, 0.2 * 0.8 / 0.4])


def piecewise_pair(seed: int):
    """A toy 'brain': three tissues with constant T1 and T2 levels (inverted order), plus mild noise."""
    rng = np.random.default_rng(seed)
    tissue = rng.integers(0, 3, size=(20, 20, 6))
    t1_levels, t2_levels = np.array([30.0, 60.0, 90.0]), np.array([0.9, 0.5, 0.2])
    t1 = t1_levels[tissue] + rng.normal(0, 0.5, tissue.shape)
    t2 = t2_levels[tissue] + rng.normal(0, 0.005, tissue.shape)
    t1[:, :2] = 0  # background
    t2[:, :2] = 0
    return t1.astype(np.float32), t2.astype(np.float32), tissue


def test_brain_clustering_maps_piecewise_constant_t1_to_the_right_t2_levels():
    train = [piecewise_pair(s) for s in range(3)]
    model = clustering.BrainClustering(main_clusters=3, sub_clusters=9, smoothing="none")
    model.fit([t[0] for t in train], [clustering.min_max(t[1]) for t in train])
    t1, t2, tissue = piecewise_pair(10)
    pred = model.predict(t1)
    truth = clustering.min_max(t2)
    fg = t1 > 0
    for level in range(3):
        region = fg & (tissue == level)
        assert np.median(pred[region]) == pytest.approx(np.median(truth[region]), abs=0.03)
    assert (pred[~fg] == 0).all()
    assert metrics.mse(truth, pred, fg) < 1e-3
    # search mode uses the single most similar training subject and still gets the levels right
    assert metrics.mse(truth, model.predict(t1, n_similar=1), fg) < 1e-3


def test_remove_outliers_scales_to_unit_range_and_drops_bright_spikes():
    t1, _, _ = piecewise_pair(0)
    t1[5, 5, 3] = 1e4
    p = clustering.remove_outliers(t1)
    assert p.min() == 0 and p.max() == 1 and p[5, 5, 3] == 0


def test_baselines_fill_the_foreground_only():
    t1, t2, _ = piecewise_pair(1)
    pool = np.array([0.1, 0.7])
    rnd = clustering.random_t2(t1, pool, np.random.default_rng(0))
    np.testing.assert_allclose(np.unique(rnd[t1 > 0]), [0.1, 0.7])
    assert (rnd[t1 == 0] == 0).all()
    comp = clustering.complement_t2(t1)
    p = clustering.remove_outliers(t1)
    fg = p > 0
    np.testing.assert_allclose(comp[fg] + p[fg], p[fg].min() + p[fg].max(), atol=1e-6)


def test_bad_clustering_settings_are_rejected():
    with pytest.raises(ValueError, match="smoothing must be one of"):
        clustering.BrainClustering(smoothing="gauss")
    with pytest.raises(ValueError, match="main_clusters <= sub_clusters"):
        clustering.BrainClustering(main_clusters=5, sub_clusters=3)


# ------------------------------------------------------------------------------------------------ networks
def test_unet_and_patchgan_shapes():
    torch.manual_seed(0)
    gen = pix2pix.UNetGenerator(1, 1, ngf=8, depth=4)
    x = torch.rand(2, 1, 48, 64) * 2 - 1
    y = gen(x)
    assert y.shape == x.shape and y.abs().max() <= 1
    disc = pix2pix.PatchDiscriminator(2, ndf=8, n_layers=2)
    assert disc(x, y).shape == (2, 1, 10, 14)
    assert pix2pix.PatchDiscriminator(2, ndf=8, n_layers=3)(x, y).shape == (2, 1, 4, 6)


def test_pix2pix_trains_and_synthesises_a_volume():
    rng = np.random.default_rng(0)
    src = rng.random((6, 20, 24)).astype(np.float32)
    settings = pix2pix.Pix2PixSettings(epochs=2, batch_size=3, ngf=4, ndf=4, depth=3)
    gen, history = pix2pix.train_pix2pix(src, 1 - src, settings, seed=0)
    assert len(history["g_l1"]) == 2 and np.isfinite(history["d"]).all()
    vol = np.zeros((20, 24, 5), np.float32)
    vol[4:16, 4:20] = rng.random((12, 16, 5))
    out = pix2pix.synthesise_volume(gen, vol)
    assert out.shape == vol.shape and out.min() >= 0 and out.max() <= 1 and (out[vol == 0] == 0).all()


def test_deepmedic_pathways_align_and_segment_whole_volumes():
    torch.manual_seed(0)
    model = deepmedic.DeepMedic(in_channels=4, n_classes=4, widths=(4, 4, 4), fc=8)
    vol = np.random.default_rng(0).standard_normal((4, 13, 11, 10)).astype(np.float32)
    normal, context = deepmedic.segment_inputs(vol, np.array([[0, 0, 0], [6, 3, 2]]), 9, model.shrink, 3)
    assert normal.shape == (2, 4, 15, 15, 15) and context.shape == (2, 4, 9, 9, 9)
    assert model(normal, context).shape == (2, 4, 9, 9, 9)
    brain = np.ones((13, 11, 10), bool)
    brain[0] = False
    seg = deepmedic.segment_volume(model, vol, brain, size=6)
    assert seg.shape == brain.shape and set(np.unique(seg)) <= {0, 1, 2, 4} and not seg[0].any()
    with pytest.raises(ValueError, match="multiple of the context factor"):
        deepmedic.segment_inputs(vol, np.zeros((1, 3), int), 8, model.shrink, 3)


def test_deepmedic_normal_input_is_centred_on_the_block():
    vol = np.arange(20 * 20 * 20, dtype=np.float32).reshape(1, 20, 20, 20)
    normal, context = deepmedic.segment_inputs(vol, np.array([[5, 6, 7]]), 3, 2, 3)
    assert normal[0, 0, 2, 2, 2] == vol[0, 5, 6, 7]  # first output voxel after 2 valid convolutions
    # the context voxel over the block is the mean of the 3×3×3 full-resolution voxels of the block
    assert context[0, 0, 2, 2, 2] == pytest.approx(vol[0, 5:8, 6:9, 7:10].mean())


def test_deepmedic_learns_a_trivial_segmentation():
    rng = np.random.default_rng(0)
    seg = np.zeros((18, 18, 18), np.uint8)
    seg[6:12, 6:12, 6:12] = 2
    vol = np.stack([(seg > 0) * 3.0 + rng.normal(0, 0.3, seg.shape) for _ in range(2)]).astype(np.float32)
    settings = deepmedic.DeepMedicSettings(iterations=60, batch_size=4, segment=6, widths=(6, 6), fc=8, lr=1e-2)
    model, losses = deepmedic.train_deepmedic([vol], [seg], [np.ones(seg.shape, bool)], settings, seed=0)
    pred = deepmedic.segment_volume(model, vol, np.ones(seg.shape, bool), size=6)
    assert np.mean(losses[-10:]) < np.mean(losses[:10])
    assert metrics.dice(pred == 2, seg == 2) > 0.8
