"""Metrics, in fp32 whatever the model's dtype: KL (nats), top-k overlap, argmax match, target
probability, recovery, selectivity, and bootstrap confidence intervals over prompts."""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from atlas_core import AtlasError


SMALL_KL = 1e-3  # nats: the plain fp32 sum has a ~1e-7-1e-6 rounding floor, up to 0.1% of this


def _kl_close(r: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL per row of the renormalised distributions, accurate for near-identical rows, in fp32.

    With d = r - q and P, Q the normalised distributions: KL = sum_i P_i d_i - log sum_j Q_j exp(d_j)
    (exact), and sum_j Q_j exp(d_j) = 1 + sum_j Q_j expm1(d_j): no term carries the normalisation error
    of fp32 log-probs, so a KL of 1e-12 comes out as such instead of as 1e-7 of rounding."""
    p = r.exp()
    p = p / p.sum(-1, keepdim=True)
    qn = q.exp()
    qn = qn / qn.sum(-1, keepdim=True)
    d = r - q
    lo, hi = torch.aminmax(d)  # nan (both -inf) fails both comparisons
    if bool(lo > -torch.inf) and bool(hi < 80):
        a = torch.linalg.vecdot(qn, torch.expm1(d))
        pd = torch.linalg.vecdot(p, d)
    else:  # -inf log-probs or huge gaps: P_i = 0 contributes 0; Q_j exp(d_j) = P_j-scaled, no overflow
        pd = torch.where(p > 0, p * d, torch.zeros_like(d)).sum(-1)
        near = d.abs() < 1
        safe = torch.where(near, d, torch.zeros_like(d))
        lq = torch.log(q.exp().sum(-1, keepdim=True))
        a = torch.where(near, qn * torch.expm1(safe), (r - lq).exp() - qn).sum(-1)
    return pd - torch.log1p(a)


def kl_divergence(ref_logp: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
    """KL(ref || other) per row, in nats (fp32), from log-probabilities over the last dimension.

    fp32 log-probs sum to 1 only within ~1e-7, an error that enters the plain sum to first order: a
    ~1e-7 nat floor under every near-identical pair. Rows whose plain KL is small (< 1e-3) are recomputed
    with a formula free of that error (``_kl_close``), so a tiny KL (an identity, a patch with the run's
    own activations) is accurate; large KLs keep the fast plain sum. Reference tokens with probability 0
    (log-prob -inf) contribute 0."""
    r, q = ref_logp.float(), logp.float()
    kl = F.kl_div(q, r, reduction="none", log_target=True)
    if r.numel() and bool(r.amin() == -torch.inf):
        kl = torch.where(torch.isneginf(r), torch.zeros_like(kl), kl)
    kl = kl.sum(-1)
    small = kl < SMALL_KL
    if not kl.numel():
        return kl
    if bool(small.all()):
        kl = _kl_close(r, q)
    elif bool(small.any()):
        kl = kl.clone()
        kl[small] = _kl_close(r[small], q[small])
    return kl.clamp_min(0.0)


def topk_overlap(ref_logp: torch.Tensor, logp: torch.Tensor, k: int = 5) -> torch.Tensor:
    """|top-k(ref) ∩ top-k(other)| / k per row."""
    a = ref_logp.topk(k, dim=-1).indices
    b = logp.topk(k, dim=-1).indices
    return (a[..., :, None] == b[..., None, :]).any(-1).float().mean(-1)


def argmax_match(ref_logp: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
    return ref_logp.argmax(-1) == logp.argmax(-1)


def target_prob(logp: torch.Tensor, target_ids: torch.Tensor) -> torch.Tensor:
    return logp.float().gather(-1, target_ids[..., None]).squeeze(-1).exp()


def recovery(patched: np.ndarray | float, base: np.ndarray | float, target: np.ndarray | float):
    """Fraction of the gap from ``base`` to ``target`` that the patched run closes (1 = all of it)."""
    return (np.asarray(patched) - base) / (np.asarray(target) - base)


def kl_recovery(kl_patched: np.ndarray, kl_base: np.ndarray) -> np.ndarray:
    """1 - KL(target||patched) / KL(target||base): 1 when patching reproduces the target run."""
    kl_base = np.asarray(kl_base, dtype=np.float64)
    return 1.0 - np.asarray(kl_patched, dtype=np.float64) / np.where(kl_base > 0, kl_base, np.nan)


def selectivity(skill_drop: float, nonskill_drop: float, eps: float = 1e-12) -> float:
    """How much more the skill drops than the non-skill items (the study's ratio)."""
    return float(skill_drop / (nonskill_drop if abs(nonskill_drop) > eps else np.copysign(eps, nonskill_drop or 1)))


@dataclass(frozen=True)
class Estimate:
    """A statistic over prompts with its bootstrap confidence interval."""

    value: float
    lo: float
    hi: float
    n: int

    def to_dict(self) -> dict:
        return asdict(self)

    def __format__(self, spec: str) -> str:
        spec = spec or ".3f"
        return f"{self.value:{spec}} [{self.lo:{spec}}, {self.hi:{spec}}]"


TIE_RTOL = 1e-3


def is_tie(values, rtol: float = TIE_RTOL) -> bool:
    """Whether every finite value is the same within ``rtol`` of the largest: a ranking over them is
    then a tie in index order, not an order by effect (zeroing the whole residual of a model without
    biases, such as Gemma, leaves its later layers nothing to compute from: the output is the same
    whichever layer is zeroed)."""
    v = np.asarray([x for x in values if x is not None], dtype=float)
    v = v[np.isfinite(v)]
    return len(v) >= 2 and float(np.ptp(v)) <= rtol * float(np.abs(v).max())


def bootstrap(
    values, stat: Callable[[np.ndarray], float] = np.mean, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> Estimate:
    """Percentile bootstrap over the first axis (prompts)."""
    x = np.asarray(values, dtype=np.float64)
    if x.shape[0] == 0:
        raise AtlasError("bootstrap over an empty set: pass at least one value (one per prompt)")
    point = float(stat(x))
    if x.shape[0] == 1:
        return Estimate(point, point, point, 1)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.shape[0], size=(n_boot, x.shape[0]))
    stats = np.array([stat(x[i]) for i in idx])
    alpha = (1 - level) / 2
    lo, hi = np.nanquantile(stats, [alpha, 1 - alpha])
    return Estimate(point, float(lo), float(hi), int(x.shape[0]))


def pearson(x, y) -> float:
    """Pearson's r; NaN when either side is constant."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def average_ranks(x) -> np.ndarray:
    """Ranks from 0, tied values sharing the mean of the ranks they span (the convention of Spearman's rho)."""
    x = np.asarray(x, np.float64)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return (first + (counts - 1) / 2.0)[inverse]


def spearman(x, y) -> float:
    """Spearman's rank correlation: Pearson's r of the average ranks. It reads only the order, so one
    extreme value counts as one rank, where it can decide r alone; NaN when either side is constant."""
    return pearson(average_ranks(x), average_ranks(y))


def correlation_ci(x, y, stat: Callable = pearson, n_boot: int = 1000, seed: int = 0) -> list[float]:
    """95% percentile bootstrap interval of a correlation over paired points (resamples with a constant
    side give NaN and are left out)."""
    pairs = np.stack([np.asarray(x, np.float64), np.asarray(y, np.float64)], axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        est = bootstrap(pairs, stat=lambda a: stat(a[:, 0], a[:, 1]), n_boot=n_boot, seed=seed)
    return [est.lo, est.hi]
