"""SurvBeNIM chapter library: Beran estimator, kernel, loss, explainers, baselines, input checks."""

import numpy as np
import pytest
import torch
from lifelines import KaplanMeierFitter

from repro.survbenim import (
    Background,
    CoxPH,
    Settings,
    SurvBeNIM,
    SurvivalTable,
    beran_survival,
    check_survival_data,
    cox_clusters,
    fit,
    importance_scores,
    kernel_weights,
    log_kernel,
    normalise,
    strategy1,
    survival_distance,
    survlime,
    survshap,
)
from repro.survbenim.explainers import weighted_sq_distance
from repro.survbenim.local import cox_survival
from repro.survbenim.metrics import importance_cindex

torch.set_num_threads(1)


def tied_censored_sample(rng, n=60):
    times = rng.integers(1, 15, n).astype(float)  # few distinct values: many ties
    events = rng.random(n) < 0.6
    return times, events


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beran_with_equal_weights_is_kaplan_meier_with_ties_and_censoring(seed):
    times, events = tied_censored_sample(np.random.default_rng(seed))
    table = SurvivalTable.from_arrays(times, events)
    s = beran_survival(torch.full((1, len(times)), 1.0 / len(times), dtype=torch.float64), table)[0]
    km = KaplanMeierFitter().fit(times, events)
    expected = km.survival_function_at_times(table.unique_times.numpy()).to_numpy()
    np.testing.assert_allclose(s.numpy(), expected, atol=1e-12)


def test_beran_does_not_depend_on_the_order_of_the_training_data():
    rng = np.random.default_rng(10)
    times, events = tied_censored_sample(rng)
    weights = torch.softmax(torch.randn(3, len(times), dtype=torch.float64), -1)
    perm = rng.permutation(len(times))
    s = beran_survival(weights, SurvivalTable.from_arrays(times, events))
    s_perm = beran_survival(weights[:, perm], SurvivalTable.from_arrays(times[perm], events[perm]))
    torch.testing.assert_close(s, s_perm)


def test_nelson_aalen_matches_lifelines():
    from lifelines import NelsonAalenFitter

    from repro.survbenim.beran import nelson_aalen

    times, events = tied_censored_sample(np.random.default_rng(11))
    table = SurvivalTable.from_arrays(times, events)
    naf = NelsonAalenFitter(nelson_aalen_smoothing=False).fit(times, events)
    expected = naf.cumulative_hazard_at_times(table.unique_times.numpy()).to_numpy()
    np.testing.assert_allclose(nelson_aalen(table).numpy(), expected, atol=1e-10)


def test_beran_is_non_increasing_in_unit_interval_and_differentiable():
    rng = np.random.default_rng(3)
    times, events = tied_censored_sample(rng, 80)
    table = SurvivalTable.from_arrays(times, events)
    logits = torch.randn(7, len(times), dtype=torch.float64, requires_grad=True)
    s = beran_survival(torch.softmax(3 * logits, -1), table)
    assert torch.all(s >= 0) and torch.all(s <= 1)
    assert torch.all(s[:, 1:] <= s[:, :-1] + 1e-12)
    s.sum().backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_beran_puts_weight_on_the_neighbours_survival():
    # all weight on one uncensored sample: S drops to 0 exactly at its time
    times, events = np.array([1.0, 2.0, 3.0]), np.array([1, 1, 1])
    table = SurvivalTable.from_arrays(times, events)
    s = beran_survival(torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64), table)[0]
    np.testing.assert_allclose(s.numpy(), [1.0, 0.0, 0.0])


def test_kernel_weights_sum_to_one_and_match_the_direct_formula():
    rng = np.random.default_rng(4)
    z = torch.as_tensor(rng.random((2, 5, 3)))
    x = torch.as_tensor(rng.random((40, 3)))
    b = torch.as_tensor(rng.random((2, 5, 3)) * 4)
    for g, fn in (("square", torch.square), ("abs", torch.abs)):
        w = kernel_weights(z, x, b, tau=2.0, distance=g)
        torch.testing.assert_close(w.sum(-1), torch.ones(2, 5, dtype=torch.float64))
        direct = -2.0 * (b[..., None, :] * fn(z[..., None, :] - x)).mean(-1)  # the n x d broadcast
        torch.testing.assert_close(log_kernel(z, x, b, 2.0, g), direct)


def test_loss_is_zero_for_identical_functions_and_positive_otherwise():
    grid = np.array([0.0, 1.0, 3.0, 4.0])
    s = np.array([[1.0, 0.8, 0.5, 0.2], [1.0, 0.9, 0.9, 0.1]])
    assert survival_distance(s, s, grid) == 0.0
    other = s.copy()
    other[0, 1] = 0.6  # differs on [1, 3): gap 0.2 over 2 of 4 time units
    assert survival_distance(s[:1], other[:1], grid) == pytest.approx(0.2 ** 2 * 2 / 4)
    st = torch.as_tensor(s)
    dt = torch.as_tensor(np.diff(grid, append=grid[-1]))
    assert weighted_sq_distance(st, st, dt, 4.0, torch.ones(2, dtype=torch.float64)).item() == 0.0


def test_importance_metrics_known_answers():
    truth = np.array([0.5, 0.25, 0.12, 0.0, 0.0])
    assert importance_scores(truth, truth * 3)["mse"] == pytest.approx(0.0)
    assert importance_cindex(truth, truth) == 1.0
    assert importance_cindex(truth, -truth) == 0.0
    np.testing.assert_allclose(np.abs(normalise(np.array([2.0, -2.0]))).sum(), 1.0)


def test_survlime_recovers_the_coefficients_of_a_cox_black_box():
    rng = np.random.default_rng(5)
    beta = np.array([0.8, -0.3, 0.0])
    h0 = np.linspace(0.01, 2.0, 30)
    z = 0.5 + 0.1 * rng.standard_normal((80, 3))
    b = survlime(z, np.ones(80), cox_survival(z, beta, h0), h0, np.ones(30))
    np.testing.assert_allclose(b, beta, atol=1e-3)


def test_survshap_is_exact_for_an_additive_model_and_efficient():
    rng = np.random.default_rng(6)
    grid = np.linspace(0, 1, 5)

    def predict(rows):  # additive in features: phi_k = f_k(x_k) - mean f_k(background)
        return 0.5 + 0.1 * rows[:, :1] * grid + 0.3 * np.sin(rows[:, 1:2]) * grid

    x, bg = rng.random(3), rng.random((10, 3))
    phi, base = survshap(predict, x, bg)
    np.testing.assert_allclose(phi[0], 0.1 * (x[0] - bg[:, 0].mean()) * grid, atol=1e-12)
    np.testing.assert_allclose(phi[2], 0.0, atol=1e-12)
    np.testing.assert_allclose(base + phi.sum(0), predict(x[None])[0], atol=1e-12)


def toy_cox(rng, n=150):
    beta = np.array([2.0, 1.0, 0.0])
    X = rng.random((n, 3))
    times = -np.log(rng.random(n)) / np.exp(X @ beta)
    events = rng.random(n) < 0.9
    return X, times, events, beta


def test_survbenim_recovers_the_importance_order_of_a_toy_cox_model_better_than_random():
    rng = np.random.default_rng(7)
    X, times, events, beta = toy_cox(rng)
    from repro.survbenim.data import SurvivalData

    train = SurvivalData(X, times, events, ["a", "b", "c"], "toy")
    bb = CoxPH().fit(X, times, events)
    instances = rng.random((4, 3))
    cfg = Settings(n_neighbours=40, n_val=20, epochs=15, radius=0.4, hidden=8, tau=10.0)
    res = strategy1(bb, train, instances, cfg, seed=0, methods=("survbenim",))
    ours = np.mean([importance_scores(beta, b)["cindex"] for b in res.importance["survbenim"]])
    random = np.mean([importance_scores(beta, b)["cindex"] for b in rng.random((200, 3))])
    assert ours > random + 0.25  # random explainers score about 0.5
    assert res.fidelity["survbenim"].mean() < 0.02  # a close surrogate (the survival gap is at most 1)


def test_training_lowers_the_loss():
    rng = np.random.default_rng(8)
    X, times, events, _ = toy_cox(rng, 80)
    bg = Background.from_arrays(X, times, events)
    bb = CoxPH().fit(X, times, events)
    z = torch.as_tensor(rng.random((1, 40, 3)))
    s = torch.as_tensor(bb.survival(z[0].numpy(), bg.grid))[None]
    w = torch.ones(1, 40, dtype=torch.float64)
    model = SurvBeNIM(bg, 1, hidden=8, generator=torch.Generator().manual_seed(0))
    hist = fit(model, z, s, w, z, s, w, epochs=10, lr=3e-2, generator=torch.Generator().manual_seed(0))
    assert min(hist["val"][1:]) < hist["val"][0]


@pytest.mark.parametrize("X, times, events, message", [
    (np.zeros((3, 2)), [1.0, -1.0, 2.0], [1, 0, 1], "non-negative"),
    (np.zeros((3, 2)), [1.0, 1.0, 2.0], [1, 2, 1], "must be 0 .censored. or 1"),
    (np.array([[0.0, np.nan], [1, 1], [2, 2]]), [1.0, 1.0, 2.0], [1, 0, 1], "NaN"),
    (np.zeros((3, 2)), [1.0, 2.0], [1, 0, 1], "same length"),
])
def test_bad_training_data_gets_a_clear_error(X, times, events, message):
    with pytest.raises(ValueError, match=message):
        check_survival_data(X, times, events)


def test_instance_with_the_wrong_number_of_features_gets_a_clear_error():
    rng = np.random.default_rng(9)
    X, times, events, _ = toy_cox(rng, 40)
    bb = CoxPH().fit(X, times, events)
    with pytest.raises(ValueError, match="expected 3 features"):
        bb.survival(np.zeros(4), np.array([0.5]))
    from repro.survbenim.data import SurvivalData

    with pytest.raises(ValueError, match="expected 3 features"):
        strategy1(bb, SurvivalData(X, times, events, list("abc"), "toy"), np.zeros((2, 5)), Settings())
    with pytest.raises(ValueError, match="unknown methods"):
        strategy1(bb, SurvivalData(X, times, events, list("abc"), "toy"), X[:1], Settings(), methods=("lime",))


def test_cox_cluster_generator_has_known_coefficients_and_censoring():
    data = cox_clusters(n_per_cluster=50, noise="random", rng=np.random.default_rng(0))
    assert data.X.shape == (100, 5) and 0 <= data.X.min() and data.X.max() <= 1
    np.testing.assert_allclose(data.truth[0], [0.5, 0.25, 0.12, 0, 0])
    np.testing.assert_allclose(data.truth[-1], [0, 0, 0.12, 0.25, 0.5])
    assert data.events.mean() == pytest.approx(0.8)
    with pytest.raises(ValueError, match="noise must be"):
        cox_clusters(noise="fixed")


def test_strategy2_explains_new_instances_with_one_network():
    from repro.survbenim import strategy2
    from repro.survbenim.data import SurvivalData

    rng = np.random.default_rng(12)
    X, times, events, beta = toy_cox(rng)
    bb = CoxPH().fit(X, times, events)
    train = SurvivalData(X, times, events, list("abc"), "toy")
    new = rng.random((5, 3))
    cfg = Settings(n_neighbours=30, n_val=10, epochs=10, radius=0.4, hidden=8, tau=10.0)
    res = strategy2(bb, train, new, cfg, n_centres=6, seed=0)
    assert set(res.models) == {"survbenim", "survnam"} and res.importance["survbenim"].shape == (5, 3)
    with torch.no_grad():  # the same network explains any further instance directly
        again = res.models["survbenim"].importance(torch.as_tensor(new)[None])[0].numpy()
    np.testing.assert_allclose(again, res.importance["survbenim"])
    cindex = np.mean([importance_scores(beta, b)["cindex"] for b in res.importance["survbenim"]])
    assert cindex > 0.75 and np.isfinite(res.fidelity["survnam"]).all()
    with pytest.raises(ValueError, match="unknown methods"):
        strategy2(bb, train, new, cfg, methods=("survlime",))
