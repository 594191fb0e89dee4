"""E-Sparse's pieces and the layer-by-layer LLM pruning driver, on a tiny random LLaMA."""

import copy
import math

import pytest
import torch

from repro import esparse
from repro import llm_pruning as lp
from repro.pruning import is_nm_sparse, nm_mask


@pytest.fixture(scope="module")
def tiny_llama(make_tiny_llama):
    return make_tiny_llama(101, 64, 128)


@pytest.fixture(scope="module")
def calibration():
    return torch.randint(0, 101, (4, 24), generator=torch.Generator().manual_seed(1))


# --- entropy -------------------------------------------------------------------------------------

def test_entropy_of_values_spread_evenly_over_bins_is_log_bins():
    bins = 8
    x = (torch.arange(800, dtype=torch.float32) % bins).unsqueeze(1)  # 100 values in each bin
    assert esparse.channel_entropy(x, bins).item() == pytest.approx(math.log(bins), rel=1e-6)


def test_entropy_of_a_constant_channel_is_zero():
    x = torch.stack([torch.full((50,), 3.0), torch.randn(50)], 1)
    h = esparse.channel_entropy(x, 16)
    assert h[0].item() == 0.0 and h[1].item() > 1.0


def test_entropy_of_two_equal_clusters_is_log_two():
    x = torch.cat([torch.zeros(30), torch.ones(30)]).unsqueeze(1)
    assert esparse.channel_entropy(x, 32).item() == pytest.approx(math.log(2), rel=1e-6)


def test_entropy_rejects_bad_inputs():
    with pytest.raises(ValueError, match="tokens, channels"):
        esparse.channel_entropy(torch.zeros(3), 8)
    with pytest.raises(ValueError, match="bins must be at least 2"):
        esparse.channel_entropy(torch.zeros(3, 2), 1)


# --- metrics ---------------------------------------------------------------------------------------

def test_wanda_metric_equals_brute_force(tiny_llama, calibration):
    x = torch.randn(40, 8)
    w = torch.randn(3, 8)
    scores = lp.scores_for(lp.PruneConfig("wanda", "2:4"), w, x)
    for i in range(3):
        for j in range(8):
            norm = math.sqrt(sum(float(x[t, j]) ** 2 for t in range(40)))
            assert scores[i, j].item() == pytest.approx(abs(float(w[i, j])) * norm, rel=1e-5)


def test_esparse_scores_reduce_to_wanda_when_entropy_has_no_weight():
    w, norm, h = torch.randn(4, 8), torch.rand(8) + 0.1, torch.rand(8)
    scaled = esparse.esparse_scores(w, norm, h, combine="scaled", alpha=0.0)
    assert torch.allclose(scaled, w.abs() * norm)


def test_esparse_scores_rank_higher_entropy_channels_higher_at_equal_norm():
    w, norm = torch.ones(1, 2), torch.ones(2)
    for combine in esparse.COMBINATIONS:
        s = esparse.esparse_scores(w, norm, torch.tensor([0.5, 2.0]), combine=combine)
        assert s[0, 1] > s[0, 0], combine
    with pytest.raises(ValueError, match="combine must be one of"):
        esparse.esparse_scores(w, norm, norm, combine="max")


# --- shuffles --------------------------------------------------------------------------------------

def test_global_shuffle_deals_the_top_channels_into_different_groups():
    scores = torch.zeros(2, 16)
    scores[:, [0, 1, 2, 3]] = torch.tensor([4.0, 3.0, 2.0, 1.0])  # the four best share group 0
    perm = esparse.global_naive_shuffle(scores, 4)
    assert sorted(perm.tolist()) == list(range(16))
    groups_of_best = {perm.tolist().index(c) // 4 for c in (0, 1, 2, 3)}
    assert groups_of_best == {0, 1, 2, 3}
    assert esparse.retained_fraction(scores, perm, 2, 4) > esparse.retained_fraction(scores, torch.arange(16), 2, 4)


def test_local_block_shuffle_never_lowers_the_retained_score():
    torch.manual_seed(3)
    scores = torch.rand(16, 32) ** 3
    start = torch.randperm(32)
    perm = esparse.local_block_shuffle(scores, start, 2, 4, block_groups=2, passes=4)
    assert sorted(perm.tolist()) == list(range(32))
    assert esparse.retained_fraction(scores, perm, 2, 4) >= esparse.retained_fraction(scores, start, 2, 4)


@pytest.mark.parametrize("n,m,block_groups", [(1, 4, 2), (2, 4, 2), (3, 4, 3), (4, 8, 2)])
def test_swap_gains_equal_the_retained_score_recomputed_after_each_swap(n, m, block_groups):
    generator = torch.Generator().manual_seed(n + m)
    width = block_groups * m
    block_scores = torch.randint(0, 5, (3, 6, width), generator=generator).double()  # many ties
    pairs = [(a, b) for a in range(width) for b in range(a + 1, width) if a // m != b // m]
    swap_a, swap_b = torch.tensor([a for a, _ in pairs]), torch.tensor([b for _, b in pairs])
    gains = esparse.swap_gains(block_scores, swap_a, swap_b, n, m)
    base = esparse.retained(block_scores, n, m).sum(-1)
    for i, (a, b) in enumerate(pairs):
        order = list(range(width))
        order[a], order[b] = b, a
        expected = esparse.retained(block_scores[..., order], n, m).sum(-1) - base
        torch.testing.assert_close(gains[:, i], expected)


def test_local_block_shuffle_finds_the_obvious_swap():
    scores = torch.tensor([[9.0, 8.0, 7.0, 0.0, 0.0, 0.0, 0.0, 6.0]])  # group 0 holds three big ones
    perm = esparse.local_block_shuffle(scores, torch.arange(8), 2, 4, block_groups=2, passes=1)
    assert esparse.retained_fraction(scores, perm, 2, 4) == pytest.approx(1.0)


def test_shuffling_channels_without_pruning_keeps_the_logits(tiny_llama, calibration):
    model = copy.deepcopy(tiny_llama)
    with torch.no_grad():
        before = model(calibration).logits
    for layer in lp.decoder_layers(model):
        for name, linear in lp.layer_linears(layer).items():
            perm = torch.randperm(linear.in_features)
            lp.replace_module(layer, name, lp.PermutedLinear.shuffled(linear, perm))
    with torch.no_grad():
        after = model(calibration).logits
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)


def test_esparse_reports_the_share_of_the_score_kept_before_between_and_after_its_shuffles(tiny_llama, calibration):
    layer = lp.decoder_layers(tiny_llama)[0]
    hidden, kwargs = lp.capture_first_layer_inputs(tiny_llama, calibration)
    x = lp.record_linear_inputs(layer, hidden, kwargs)["mlp.down_proj"]
    cfg = lp.PruneConfig("esparse", "2:4")
    scores = lp.scores_for(cfg, layer.mlp.down_proj.weight, x)
    shuffled, info = lp.prune_linear(copy.deepcopy(layer.mlp.down_proj), x, cfg)
    identity = torch.arange(scores.shape[1])
    perm_global = esparse.global_naive_shuffle(scores, 4)
    assert info["retained_before"] == pytest.approx(esparse.retained_fraction(scores, identity, 2, 4), rel=1e-6)
    assert info["retained_global"] == pytest.approx(esparse.retained_fraction(scores, perm_global, 2, 4), rel=1e-6)
    assert info["retained_after"] == pytest.approx(esparse.retained_fraction(scores, shuffled.perm, 2, 4), rel=1e-6)
    assert info["retained_after"] > info["retained_before"]
    # the local shuffle accepts only swaps that raise the kept score of the rows it scores; this layer has fewer
    # rows than cfg.shuffle_rows, so those are all rows and it never undoes the global shuffle's gain
    assert layer.mlp.down_proj.out_features <= cfg.shuffle_rows
    assert info["retained_after"] >= info["retained_global"] - 1e-6


# --- the pruning driver ----------------------------------------------------------------------------

def test_layer_by_layer_replay_reproduces_the_model(tiny_llama, calibration):
    hidden, kwargs = lp.capture_first_layer_inputs(tiny_llama, calibration)
    for layer in lp.decoder_layers(tiny_llama):
        hidden = lp.run_layer(layer, hidden, kwargs)
    with torch.no_grad():
        logits = tiny_llama.lm_head(tiny_llama.model.norm(hidden))
        torch.testing.assert_close(logits, tiny_llama(calibration).logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", lp.METHODS)
@pytest.mark.parametrize("pattern", lp.PATTERNS)
def test_every_method_gives_valid_masks_and_leaves_embeddings_alone(tiny_llama, calibration, method, pattern):
    model = copy.deepcopy(tiny_llama)
    lp.prune_model(model, calibration, lp.PruneConfig(method, pattern))
    n, m, _ = lp.parse_pattern(pattern)
    for name, weight in lp.linear_weights(model).items():
        if n:
            assert is_nm_sparse(weight, n, m), name
            groups = (weight != 0).reshape(weight.shape[0], -1, m).sum(-1)
            assert (groups == n).all(), name  # exactly n kept: random weights have no zeros
        else:
            assert (weight == 0).float().mean().item() == pytest.approx(0.5, abs=0.01), name
    assert torch.equal(model.model.embed_tokens.weight, tiny_llama.model.embed_tokens.weight)
    assert torch.equal(model.lm_head.weight, tiny_llama.lm_head.weight)
    assert torch.equal(model.model.norm.weight, tiny_llama.model.norm.weight)


def test_nm_mask_keeps_exactly_n_in_every_group_of_every_row():
    scores = torch.rand(7, 24)
    for n, m in ((2, 4), (4, 8)):
        mask = nm_mask(scores, n, m)
        assert (mask.reshape(7, -1, m).sum(-1) == n).all()


def test_unstructured_mask_drops_the_lowest_half_of_each_row():
    scores = torch.tensor([[1.0, 4.0, 2.0, 3.0], [8.0, 5.0, 7.0, 6.0]])
    mask = lp.mask_from_scores(scores, "unstructured50")
    assert mask.tolist() == [[False, True, False, True], [True, False, True, False]]


def test_sparsegpt_update_fits_the_dense_outputs_better_than_masking():
    torch.manual_seed(0)
    from repro.sparsegpt import sparsegpt_prune

    w = torch.randn(6, 16)
    x = torch.randn(200, 16)
    pruned = sparsegpt_prune(w, x.t() @ x, n=2, m=4)
    assert is_nm_sparse(pruned, 2, 4)
    # the OBS update makes the pruned layer fit the dense outputs better than plain masking does
    masked = w * (pruned != 0)
    err_obs = ((x @ pruned.t() - x @ w.t()) ** 2).sum()
    err_mask = ((x @ masked.t() - x @ w.t()) ** 2).sum()
    assert err_obs < err_mask


def _obs_reference(w: torch.Tensor, h: torch.Tensor, n: int, m: int, sparsity: float, blocksize: int,
                   percdamp: float = 0.01) -> torch.Tensor:
    """SparseGPT written as plain sequential OBS in float64, without the Cholesky shortcut: after
    columns < q are fixed, the free weights of a row are those >= q, the inverse Hessian of that
    set is inv(H[q:, q:]), and pruning column q moves w_q / inv[0, 0] times inv's first row onto
    them. A column's saliency denominator is inv(H[q:, q:])[0, 0] (the squared diagonal of the
    library's factor)."""
    h = h.double() + percdamp * torch.diag(h).double().mean() * torch.eye(h.shape[0], dtype=torch.float64)
    w = w.double().clone()
    cols = w.shape[1]
    inverses = [torch.linalg.inv(h[q:, q:]) for q in range(cols)]
    denominator = torch.stack([inv[0, 0] for inv in inverses])
    prune = torch.zeros_like(w, dtype=torch.bool)
    for q in range(cols):
        if n and q % m == 0:  # N:M: decided when the sweep reaches the group
            saliency = w[:, q:q + m] ** 2 / denominator[q:q + m]
            drop = saliency.topk(m - n, dim=1, largest=False).indices
            prune[:, q:q + m].scatter_(1, drop, True)
        if not n and q % blocksize == 0:  # unstructured: decided per block, over all its rows
            saliency = w[:, q:q + blocksize] ** 2 / denominator[q:q + blocksize]
            k = int(saliency.numel() * sparsity)
            prune[:, q:q + blocksize] = saliency <= saliency.flatten().kthvalue(k).values
        err = torch.where(prune[:, q], w[:, q], 0.0) / inverses[q][0, 0]
        w[:, q:] -= err[:, None] * inverses[q][0][None, :]
    return w.masked_fill(prune, 0.0)


@pytest.mark.parametrize("blocksize", [16, 40])
@pytest.mark.parametrize("kwargs", [dict(n=2, m=4), dict(n=4, m=8), dict(sparsity=0.5), dict(sparsity=0.3)])
def test_sparsegpt_equals_sequential_obs_written_out(kwargs, blocksize):
    from repro.sparsegpt import sparsegpt_prune

    torch.manual_seed(3)
    w = torch.randn(5, 96)
    x = torch.randn(300, 96) @ torch.randn(96, 96)  # correlated inputs: the updates matter
    h = x.t() @ x
    n, m, sparsity = kwargs.get("n", 0), kwargs.get("m", 0), kwargs.get("sparsity", 0.5)
    expected = _obs_reference(w, h, n, m, sparsity, blocksize)
    # float64 on CPU by default (working_dtype), float32 on request. Blocks of 16 columns are one
    # sub-block of the sweep each; blocks of 40 (and a last one of 16) hold sub-blocks of 16, 16, 8
    for weight, dtype, tolerance in [(w.double(), None, 1e-9), (w, torch.float32, 1e-3)]:
        pruned = sparsegpt_prune(weight, h, blocksize=blocksize, dtype=dtype, **kwargs)
        assert pruned.dtype == weight.dtype
        assert torch.equal(pruned == 0, expected == 0)
        torch.testing.assert_close(pruned.double(), expected, rtol=tolerance, atol=tolerance / 10)
    assert not torch.allclose(pruned, w * (pruned != 0), atol=1e-2)  # the kept weights did move


def test_sparsegpt_precision_is_float64_on_cpu_and_checked():
    from repro.sparsegpt import hessian_of, sparsegpt_prune, working_dtype

    assert working_dtype("cpu") == torch.float64 and working_dtype("cuda") == torch.float32
    x = torch.randn(10, 8)
    assert hessian_of(x).dtype == torch.float64
    torch.testing.assert_close(hessian_of(x.view(2, 5, 8)), x.double().t() @ x.double())
    with pytest.raises(ValueError, match=r"dtype must be torch.float32 or torch.float64, got torch.float16"):
        sparsegpt_prune(torch.randn(2, 8), torch.eye(8), dtype=torch.float16)


@pytest.mark.parametrize("kwargs,match", [
    ({"method": "lottery", "pattern": "2:4"}, "unknown pruning method 'lottery'"),
    ({"method": "wanda", "pattern": "3:2"}, "unknown sparsity pattern '3:2'"),
    ({"method": "wanda", "pattern": "1.5"}, "unknown sparsity pattern '1.5'"),
    ({"method": "esparse", "pattern": "2:4", "combine": "max"}, "combine must be one of"),
])
def test_bad_pruning_settings_get_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        lp.PruneConfig(**kwargs)


def test_sparsegpt_rejects_bad_sparsity():
    from repro.sparsegpt import sparsegpt_prune

    with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\)"):
        sparsegpt_prune(torch.randn(2, 8), torch.eye(8), sparsity=1.5)


def test_unstructured_row_groups_choose_within_each_group():
    """Stacked linears pruned in one sweep get what separate sweeps give them, not a joint choice
    (here the second group's weights are 100x smaller: a joint threshold would prune all of them)."""
    from repro.sparsegpt import inverse_hessian_factor, prune_with_factor

    torch.manual_seed(4)
    x = torch.randn(200, 64, dtype=torch.float64) @ torch.randn(64, 64, dtype=torch.float64)
    factor, dead = inverse_hessian_factor(x.t() @ x)
    first, second = torch.randn(3, 64, dtype=torch.float64), torch.randn(5, 64, dtype=torch.float64) / 100
    stacked = prune_with_factor(torch.cat([first, second]), factor, dead, blocksize=32, row_groups=[3, 5])
    separate = torch.cat([prune_with_factor(part, factor, dead, blocksize=32) for part in (first, second)])
    assert torch.equal(stacked == 0, separate == 0)
    torch.testing.assert_close(stacked, separate, rtol=1e-10, atol=1e-12)
    assert (stacked[3:] == 0).double().mean() == 0.5
    with pytest.raises(ValueError, match=r"row_groups must be positive row counts summing to 8, got \[3, 4\]"):
        prune_with_factor(torch.cat([first, second]), factor, dead, row_groups=[3, 4])


@pytest.mark.parametrize("pattern", ["2:4", "unstructured50"])
def test_sparsegpt_sharing_inputs_equals_one_run_per_linear(tiny_llama, calibration, pattern):
    from repro.sparsegpt import sparsegpt_prune

    n, m, sparsity = lp.parse_pattern(pattern)

    layer = lp.decoder_layers(tiny_llama)[0]
    hidden, kwargs = lp.capture_first_layer_inputs(tiny_llama, calibration)
    inputs = lp.record_linear_inputs(layer, hidden, kwargs)
    linears = {k: copy.deepcopy(v) for k, v in lp.layer_linears(layer).items()}
    expected = {}
    for name, linear in linears.items():
        x = inputs[name].double()
        expected[name] = sparsegpt_prune(linear.weight, x.t() @ x, n=n, m=m, sparsity=sparsity)
    lp.prune_sharing_inputs(linears, inputs, lp.PruneConfig("sparsegpt", pattern))
    for name, linear in linears.items():
        torch.testing.assert_close(linear.weight, expected[name], rtol=1e-4, atol=1e-5)


def test_sparsegpt_through_prune_linear_and_in_float32_by_patching_the_hessian(tiny_llama, calibration,
                                                                                monkeypatch):
    from repro.sparsegpt import sparsegpt_prune

    layer = lp.decoder_layers(tiny_llama)[0]
    hidden, kwargs = lp.capture_first_layer_inputs(tiny_llama, calibration)
    x = lp.record_linear_inputs(layer, hidden, kwargs)["mlp.down_proj"]
    linear = copy.deepcopy(layer.mlp.down_proj)
    lp.prune_linear(linear, x, lp.PruneConfig("sparsegpt", "2:4"))
    expected = sparsegpt_prune(layer.mlp.down_proj.weight, x.double().t() @ x.double(), n=2, m=4)
    torch.testing.assert_close(linear.weight, expected)
    # chapter 1's exercise 6: a float32 Hessian makes the factor and the sweep float32
    monkeypatch.setattr(lp, "hessian_of", lambda x: x.float().t() @ x.float())
    linear32 = copy.deepcopy(layer.mlp.down_proj)
    lp.prune_linear(linear32, x, lp.PruneConfig("sparsegpt", "2:4"))
    expected32 = sparsegpt_prune(layer.mlp.down_proj.weight, x.float().t() @ x.float(), n=2, m=4,
                                 dtype=torch.float32)
    assert torch.equal(linear32.weight, expected32)
    assert not torch.equal(linear32.weight, linear.weight)


def test_opt_layout_is_pruned_through_the_same_code():
    from transformers import OPTConfig, OPTForCausalLM

    torch.manual_seed(0)
    config = OPTConfig(vocab_size=120, hidden_size=64, ffn_dim=128, num_hidden_layers=2, num_attention_heads=4,
                       max_position_embeddings=64, word_embed_proj_dim=64)
    model = OPTForCausalLM(config).eval()
    ids = torch.randint(0, 120, (3, 16))
    hidden, kwargs = lp.capture_first_layer_inputs(model, ids)
    for layer in lp.decoder_layers(model):
        hidden = lp.run_layer(layer, hidden, kwargs)
    with torch.no_grad():
        logits = model.lm_head(model.model.decoder.final_layer_norm(hidden))
        torch.testing.assert_close(logits, model(ids).logits, rtol=1e-5, atol=1e-5)
    for method in lp.METHODS:
        pruned = copy.deepcopy(model)
        lp.prune_model(pruned, ids, lp.PruneConfig(method, "2:4"))
        weights = lp.linear_weights(pruned)
        assert len(weights) == 12 and all(is_nm_sparse(w, 2, 4) for w in weights.values()), method
