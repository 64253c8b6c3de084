"""Metrics: KL (nats), top-k overlap, argmax match, target probability, recovery, selectivity and the
bootstrap, checked against direct float64 / set-based references and their defining properties."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings, strategies as st

from atlas_core import AtlasError
from atlas_core.metrics import (
    Estimate,
    argmax_match,
    average_ranks,
    bootstrap,
    correlation_ci,
    kl_divergence,
    kl_recovery,
    pearson,
    recovery,
    selectivity,
    spearman,
    target_prob,
    is_tie,
    topk_overlap,
)

FEW = settings(max_examples=60, deadline=None)
SEEDS = st.integers(0, 2**31 - 1)


def rand_logits(seed: int, rows: int, vocab: int, scale: float) -> torch.Tensor:
    return scale * torch.randn(rows, vocab, generator=torch.Generator().manual_seed(seed))


def kl64(p_logits: torch.Tensor, q_logits: torch.Tensor) -> np.ndarray:
    lp = F.log_softmax(p_logits.double(), -1)
    lq = F.log_softmax(q_logits.double(), -1)
    return (lp.exp() * (lp - lq)).sum(-1).numpy()


# ---- KL ---------------------------------------------------------------------------------------------
@FEW
@given(seed=SEEDS, rows=st.integers(1, 4), vocab=st.integers(2, 300), scale=st.floats(0.01, 20.0))
def test_kl_is_nonnegative_and_matches_float64(seed, rows, vocab, scale):
    a, b = rand_logits(seed, rows, vocab, scale), rand_logits(seed + 1, rows, vocab, scale)
    kl = kl_divergence(F.log_softmax(a, -1), F.log_softmax(b, -1))
    assert kl.dtype == torch.float32 and kl.shape == (rows,)
    assert torch.all(kl >= 0)
    np.testing.assert_allclose(kl.numpy(), kl64(a, b), rtol=1e-4, atol=1e-5)


@FEW
@given(seed=SEEDS, vocab=st.integers(2, 300), scale=st.floats(0.01, 20.0), shift=st.floats(-50, 50))
def test_kl_is_zero_for_identical_distributions(seed, vocab, scale, shift):
    a = rand_logits(seed, 3, vocab, scale)
    lp = F.log_softmax(a, -1)
    assert torch.all(kl_divergence(lp, lp) == 0)
    # the same distribution from shifted logits: zero up to fp32 rounding
    assert torch.all(kl_divergence(lp, F.log_softmax(a + shift, -1)) <= 1e-5)


@FEW
@given(
    seed=SEEDS, vocab=st.integers(2, 300), scale=st.floats(0.5, 20.0), i=st.integers(0, 299), bump=st.floats(0.5, 10.0)
)
def test_kl_is_positive_for_different_distributions(seed, vocab, scale, i, bump):
    """Moving one token's logit by >= 0.5 changes the distribution; KL sees it in both directions (unless the
    token's probability is so small, ~1e-30, that fp32 probabilities do not change at all)."""
    a = rand_logits(seed, 1, vocab, scale)
    b = a.clone()
    b[0, i % vocab] += bump
    pa, pb = F.log_softmax(a, -1), F.log_softmax(b, -1)
    assume(bool((pa.exp() - pb.exp()).abs().max() > 0))
    want = kl64(a, b)[0]
    got = kl_divergence(pa, pb)[0].item()
    if want > 1e-5:  # above the fp32 rounding floor
        assert got > 0 and kl_divergence(pb, pa)[0].item() > 0
        assert got == pytest.approx(want, rel=1e-3, abs=1e-6)


@FEW
@given(seed=SEEDS, vocab=st.integers(2, 300), scale=st.floats(0.01, 20.0), eps=st.floats(1e-7, 1e-5))
def test_kl_has_no_fp32_normalisation_floor(seed, vocab, scale, eps):
    """Log-probs that differ by a constant offset (the same distribution, unnormalised by eps) have KL ~0,
    not ~eps. (Adding eps in fp32 rounds each entry by up to ~5e-7, so the two distributions truly differ
    by a KL of order 1e-12: the bound is 1e-10, three orders below the plain fp32 sum's ~1e-7 floor.)"""
    lp = F.log_softmax(rand_logits(seed, 2, vocab, scale), -1)
    assert torch.all(kl_divergence(lp, lp + eps) <= 1e-10)
    assert torch.all(kl_divergence(lp - eps, lp) <= 1e-10)


@FEW
@given(seed=SEEDS, vocab=st.integers(2, 2000), noise=st.floats(1e-7, 3e-2))
def test_small_kl_is_accurate(seed, vocab, noise):
    """Near-identical distributions (the regime of identity checks and own-activation patches): the KL
    matches float64 (on the logits) to 1e-10 absolute below metrics.SMALL_KL (1e-3 nats): the fp32
    log-softmax inputs themselves carry ~5e-7 of rounding, which moves a KL of ~1e-9 by ~1e-11. Above it
    the plain fp32 sum's rounding floor (~1e-7, up to ~5e-7 seen) is at most ~0.05% (hence rtol 1e-3)."""
    a = rand_logits(seed, 3, vocab, 3.0)
    b = a + noise * torch.randn(a.shape, generator=torch.Generator().manual_seed(seed + 1))
    got = kl_divergence(F.log_softmax(a, -1), F.log_softmax(b, -1)).double().numpy()
    np.testing.assert_allclose(got, kl64(a, b), rtol=1e-3, atol=1e-10)


def test_kl_with_zero_probability_tokens():
    ref = torch.tensor([[0.5, 0.5, 0.0]]).log()  # log 0 = -inf: contributes nothing
    other = torch.tensor([[0.25, 0.25, 0.5]]).log()
    assert kl_divergence(ref, other).item() == pytest.approx(np.log(2), rel=1e-6)
    assert torch.isinf(kl_divergence(other, ref)).all()  # the reference puts mass where the other has none


def test_kl_is_computed_in_fp32_from_bf16_inputs():
    a, b = rand_logits(0, 2, 50, 3.0), rand_logits(1, 2, 50, 3.0)
    la, lb = F.log_softmax(a, -1), F.log_softmax(b, -1)
    got = kl_divergence(la.bfloat16(), lb.bfloat16())
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), kl64(a, b), rtol=0.05)


def test_kl_direction_is_clean_first():
    p = torch.tensor([[0.9, 0.1]]).log()
    q = torch.tensor([[0.5, 0.5]]).log()
    want = 0.9 * np.log(0.9 / 0.5) + 0.1 * np.log(0.1 / 0.5)  # KL(p || q)
    assert kl_divergence(p, q).item() == pytest.approx(want, rel=1e-6)
    assert kl_divergence(q, p).item() != pytest.approx(want, rel=1e-3)


# ---- top-k overlap and argmax ----------------------------------------------------------------------------
@FEW
@given(seed=SEEDS, vocab=st.integers(5, 200), k=st.integers(1, 5))
def test_topk_overlap_matches_a_set_reference(seed, vocab, k):
    a, b = rand_logits(seed, 4, vocab, 2.0), rand_logits(seed + 7, 4, vocab, 2.0)
    got = topk_overlap(a, b, k)
    assert got.shape == (4,)
    for r in range(4):
        sa = set(np.argsort(-a[r].numpy(), kind="stable")[:k].tolist())
        sb = set(np.argsort(-b[r].numpy(), kind="stable")[:k].tolist())
        assert got[r].item() == pytest.approx(len(sa & sb) / k)
    assert torch.equal(got, topk_overlap(b, a, k))
    assert torch.all(topk_overlap(a, a, k) == 1)
    assert torch.all((got >= 0) & (got <= 1))


def test_topk_overlap_known_values():
    ref = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0, 0.0]])
    assert topk_overlap(ref, torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]]), 3).item() == 0
    assert topk_overlap(ref, torch.tensor([[5.0, 0.0, 3.0, 2.0, 1.0, 4.0]]), 3).item() == pytest.approx(2 / 3)
    # the order inside the top-k does not matter
    assert topk_overlap(ref, torch.tensor([[3.0, 4.0, 5.0, 2.0, 1.0, 0.0]]), 3).item() == 1


@FEW
@given(seed=SEEDS, vocab=st.integers(2, 100))
def test_argmax_match(seed, vocab):
    a = rand_logits(seed, 5, vocab, 1.0)
    assert argmax_match(a, a).all()
    b = a.clone()
    top = a.argmax(-1)
    b[torch.arange(5), top] = a.min(-1).values - 1  # knock out the top token
    assert not argmax_match(a, b).any()
    assert torch.equal(argmax_match(a, b + 3.0), argmax_match(a, b))


def test_target_prob():
    lp = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]).log()
    got = target_prob(lp, torch.tensor([0, 2]))
    np.testing.assert_allclose(got.numpy(), [0.7, 0.8], rtol=1e-6)
    assert got.dtype == torch.float32


# ---- recovery and selectivity ---------------------------------------------------------------------------
@FEW
@given(base=st.floats(-10, 10), gap=st.floats(0.01, 10).map(lambda g: g) | st.floats(-10, -0.01), frac=st.floats(-1, 2))
def test_recovery_is_the_fraction_of_the_gap_closed(base, gap, frac):
    target = base + gap
    assert recovery(target, base, target) == pytest.approx(1.0)
    assert recovery(base, base, target) == pytest.approx(0.0, abs=1e-12)
    assert recovery(base + frac * gap, base, target) == pytest.approx(frac, abs=1e-6)
    np.testing.assert_allclose(recovery(np.array([base, target]), base, target), [0.0, 1.0], atol=1e-9)


def test_kl_recovery():
    kl_base = np.array([2.0, 0.5, 1.0, 0.0])
    got = kl_recovery(np.array([0.0, 0.25, 1.0, 0.0]), kl_base)
    np.testing.assert_allclose(got[:3], [1.0, 0.5, 0.0])
    assert np.isnan(got[3]), "recovery is undefined when the base run already equals the target"


def test_selectivity():
    assert selectivity(2.0, 1.0) == pytest.approx(2.0)
    assert selectivity(0.5, 2.0) == pytest.approx(0.25)
    assert selectivity(1.0, -4.0) == pytest.approx(-0.25)
    big = selectivity(1.0, 0.0)
    assert np.isfinite(big) and big > 1e9  # no division by zero, still "hugely selective"
    assert selectivity(-1.0, 0.0) < -1e9


# ---- bootstrap -----------------------------------------------------------------------------------------
@FEW
@given(values=st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=40), seed=st.integers(0, 1000))
def test_bootstrap_ci_contains_the_mean_and_is_deterministic(values, seed):
    est = bootstrap(values, n_boot=300, seed=seed)
    mean = float(np.mean(values))
    tol = 1e-9 * (1 + max(abs(v) for v in values))
    assert est.value == pytest.approx(mean, abs=tol)
    assert est.lo - tol <= est.value <= est.hi + tol
    assert est.n == len(values)
    assert bootstrap(values, n_boot=300, seed=seed) == est
    assert min(values) - tol <= est.lo and est.hi <= max(values) + tol


def test_bootstrap_seed_matters_and_ci_narrows_with_n():
    rng = np.random.default_rng(0)
    small, large = rng.normal(1.0, 2.0, 20), rng.normal(1.0, 2.0, 2000)
    a, b = bootstrap(small, seed=1), bootstrap(small, seed=2)
    assert (a.lo, a.hi) != (b.lo, b.hi)
    s, l_ = bootstrap(small, seed=0), bootstrap(large, seed=0)
    assert (l_.hi - l_.lo) < 0.25 * (s.hi - s.lo)  # width ~ 1/sqrt(n): 10x narrower expected
    # the 95% interval is about mean +- 1.96 sd / sqrt(n)
    assert (l_.hi - l_.lo) == pytest.approx(2 * 1.96 * large.std() / np.sqrt(2000), rel=0.2)


def test_bootstrap_edges_and_custom_statistic():
    one = bootstrap([3.5])
    assert (one.value, one.lo, one.hi, one.n) == (3.5, 3.5, 3.5, 1)
    with pytest.raises(AtlasError, match="empty"):
        bootstrap([])
    med = bootstrap([1.0, 2.0, 3.0, 100.0], stat=np.median, seed=0)
    assert med.value == 2.5 and med.lo >= 1.0 and med.hi <= 100.0
    est = Estimate(1.0, 0.5, 1.5, 10)
    assert est.to_dict() == {"value": 1.0, "lo": 0.5, "hi": 1.5, "n": 10}
    assert f"{est:.2f}" == "1.00 [0.50, 1.50]"


@FEW
@given(st.floats(0.01, 100), st.integers(2, 40), SEEDS)
def test_a_tie_is_every_value_equal_within_the_tolerance(value, n, seed):
    rng = np.random.default_rng(seed)
    flat = list(value * (1 + rng.uniform(-4e-4, 4e-4, n)))  # spread under 0.1% of the largest
    assert is_tie(flat) and is_tie(flat + [None, float("nan")])  # missing values are ignored
    spread = flat[:-1] + [value * 1.01]
    assert not is_tie(spread)
    assert not is_tie([value]) and not is_tie([]) and not is_tie([value, None])  # one value ranks nothing either way


# ---- correlations -------------------------------------------------------------------------------------
def ranks_by_definition(x) -> list[float]:
    """Each value's rank from 0: the number of smaller values, plus half the other values equal to it."""
    return [sum(b < a for b in x) + (sum(b == a for b in x) - 1) / 2 for a in x]


@FEW
@given(st.lists(st.integers(-5, 5), min_size=1, max_size=30))
def test_average_ranks_match_the_definition_with_ties(x):
    assert average_ranks(x).tolist() == ranks_by_definition(x)


@FEW
@given(SEEDS, st.integers(3, 40))
def test_spearman_is_pearson_of_ranks_and_ignores_monotone_rescaling(seed, n):
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=n), rng.normal(size=n)
    rho = spearman(x, y)
    assert rho == pytest.approx(np.corrcoef(ranks_by_definition(x), ranks_by_definition(y))[0, 1], abs=1e-12)
    assert spearman(np.exp(3 * x), y**3) == pytest.approx(rho, abs=1e-12)  # strictly increasing maps keep ranks
    assert spearman(x, -y) == pytest.approx(-rho, abs=1e-12)
    assert spearman(x, 2 * x + 1) == pytest.approx(1.0) and pearson(x, 2 * x + 1) == pytest.approx(1.0)


def test_one_outlier_decides_pearson_but_not_spearman():
    """The adapter-ablation case: effect rising with norm, except one layer a thousand times the rest."""
    norm = np.linspace(1.0, 3.0, 28)
    kl = 1e-6 * norm
    kl[0] = 1e-2
    assert pearson(norm, kl) < 0 and spearman(norm, kl) > 0.75
    lo, hi = correlation_ci(norm, kl, spearman, n_boot=300, seed=0)
    assert 0.3 < lo <= spearman(norm, kl) <= hi <= 1.0  # no resample of layers turns the order around


def test_correlations_of_a_constant_side_are_nan():
    assert np.isnan(pearson([1, 1, 1], [1, 2, 3])) and np.isnan(spearman([1, 2, 3], [4, 4, 4]))
    assert np.isnan(pearson([1.0], [2.0]))
