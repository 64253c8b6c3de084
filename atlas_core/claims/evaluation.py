"""Checking a claim against the finding statistics of its model(s), and the tolerance rule of a measured
value (claims written from runs, runs compared)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from atlas_core import AtlasError
from atlas_core.claims.files import Claim
from atlas_core.verdicts import Stat, decide


@dataclass
class Evaluation:
    """The outcome of checking one claim: the measured value with its interval, the threshold,
    pass/fail and a message naming the claim, the value, the threshold and the model(s)."""

    claim: Claim
    models: tuple[str, ...]
    passed: bool
    statistic: str
    value: float | None
    lo: float | None
    hi: float | None
    threshold: str
    message: str
    verdict: str | None = None
    expected_verdict: str | None = None
    series: dict | None = None
    evidence: dict = field(default_factory=dict)

    def row(self) -> dict:
        """The ``("atlas", {...})`` user property the pytest-html rows render."""
        return {
            "claim": self.claim.id,
            "models": list(self.models),
            "statistic": self.statistic,
            "value": _finite(self.value),
            "lo": _finite(self.lo),
            "hi": _finite(self.hi),
            "threshold": self.threshold,
            "verdict": self.verdict,
            "expected_verdict": self.expected_verdict,
            "series": self.series,
        }


def _finite(x):
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def format_estimate(value, lo=None, hi=None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a (not measured)"
    s = f"{value:.4g}"
    if lo is not None and hi is not None:
        s += f" [{lo:.4g}, {hi:.4g}]"
    return s


def evaluate(
    claim: Claim,
    stats: Sequence[Mapping[str, Stat]],
    models: Sequence[str],
    thresholds: Mapping[str, Mapping] | None = None,
) -> Evaluation:
    """Check ``claim`` against the statistics of its model(s) (same order as ``claim.models``:
    one model, or small then large). ``models`` are the names actually measured."""
    models = tuple(models)
    if len(stats) != len(claim.models) or len(models) != len(claim.models):
        raise AtlasError(f"claim {claim.id}: needs statistics of {len(claim.models)} model(s), got {len(stats)}")
    who = " vs ".join(models)
    if claim.hypothesis:
        th = (thresholds or {}).get(claim.hypothesis)
        if th is None:
            raise AtlasError(f"claim {claim.id}: no thresholds for {claim.hypothesis}")
        v = decide(claim.hypothesis, stats[0], stats[1], th)
        measured = format_estimate(v.value, v.lo, v.hi)
        ev = {"verdict": v.verdict, "evidence": v.evidence, "rule": v.rule}
        if claim.kind == "verdict":
            ok = v.verdict == claim.expected_verdict
            msg = (
                f"claim {claim.id} ({claim.source}) on {who}: {claim.hypothesis} verdict {v.verdict.upper()}, "
                f"expected {claim.expected_verdict.upper()}; {v.statistic} = {measured} "
                f"(rule: {v.rule}; evidence {_evidence(v.evidence)})"
            )
            return Evaluation(
                claim,
                models,
                ok,
                v.statistic,
                v.value,
                v.lo,
                v.hi,
                claim.expectation(),
                msg + ("" if ok else " -> FAIL"),
                v.verdict,
                claim.expected_verdict,
                None,
                ev,
            )
        value, lo, hi, name, series, label = v.value, v.lo, v.hi, v.statistic, None, ""
        verdict = v.verdict
    else:
        s = stats[0].get(claim.statistic)
        name, verdict = claim.statistic, None
        if s is None:
            value = lo = hi = None
            series, label = None, ""
        else:
            value, lo, hi, series, label = s.value, s.lo, s.hi, s.series, s.label or ""
        if claim.kind in ("location", "top_k", "profile"):
            return _where(claim, s, models, who)
        if claim.kind == "value" and claim.layer is not None:  # the per-layer profile's value at one layer
            ser = (s.series or {}) if s is not None else {}
            xs = list(ser.get("x") or [])
            x = claim.layer
            if claim.n_heads and ser.get("n_heads"):  # the same (layer, head) on a model of another head count
                layer, head = divmod(claim.layer, claim.n_heads)
                x = layer * ser["n_heads"] + head if head < ser["n_heads"] else None
            i = xs.index(x) if x is not None and x in xs else None
            pick = lambda key: None if i is None or not ser.get(key) else ser[key][i]  # noqa: E731
            value, lo, hi = pick("y"), pick("lo"), pick("hi")
            what, at = ("heads", claim.item(claim.layer)) if claim.n_heads else ("layers", f"L{claim.layer}")
            name = f"{claim.statistic} at {at}"
            label = (
                ""
                if s is None
                else (
                    f"{at} of {ser.get('n_layers', len(xs))} layers"
                    if i is not None
                    else f"no {at}: {len(xs)} {what} measured"
                )
            )
        if claim.kind == "rank":
            ranking = list(s.ranking or ()) if s is not None else []
            target = claim.family if claim.family is not None else claim.layer
            rank = ranking.index(target) + 1 if target in ranking else None
            ok = rank is not None and rank <= claim.max_rank
            top = ", ".join(str(x) if isinstance(x, str) else f"L{x}" for x in ranking[: max(claim.max_rank, 3)])
            what = "families" if claim.family is not None else "layers"
            got = (
                f"rank {rank} of {len(ranking)}"
                if rank is not None
                else (
                    f"{claim.ranked} not among the {len(ranking)} {what} measured"
                    if ranking
                    else f"not ranked: {label}"
                    if s is not None and s.tie
                    else "not measured"
                )
            )
            msg = (
                f"claim {claim.id} ({claim.source}) on {who}: {claim.statistic}: {claim.ranked} {got} "
                f"(top: {top or 'n/a'}); expected rank <= {claim.max_rank}" + ("" if ok else " -> FAIL")
            )
            return Evaluation(
                claim,
                models,
                ok,
                f"rank of {claim.ranked} by {claim.statistic}",
                None if rank is None else float(rank),
                None,
                None,
                claim.expectation(),
                msg,
                None,
                None,
                series,
                {},
            )
    ok = _check(claim, value)
    tie = claim.hypothesis is None and s is not None and s.tie
    measured = f"none: {label}" if tie else format_estimate(value, lo, hi) + (f" ({label})" if label else "")
    msg = f"claim {claim.id} ({claim.source}) on {who}: {name} measured {measured}; expected {claim.expectation()}" + (
        "" if ok else " -> FAIL"
    )
    return Evaluation(claim, models, ok, name, value, lo, hi, claim.expectation(), msg, verdict, None, series, {})


def _where(claim: Claim, s: Stat | None, models, who: str) -> Evaluation:
    """A location, top-k or profile claim against a per-layer (per-head) profile statistic."""
    from atlas_core.layers import item_layer, item_name
    from atlas_core.stat import relative_depth

    head = f"claim {claim.id} ({claim.source}) on {who}: {claim.statistic}: "
    series = (s.series or {}) if s is not None else {}
    name = lambda x: item_name(x, series or ({"n_heads": claim.n_heads} if claim.n_heads else None))  # noqa: E731
    ranking = list(s.ranking or ()) if s is not None and not s.tie else []
    value, ok, got = None, False, ""
    xs = series.get("x") or []
    if not ranking:
        got = "not measured" if s is None else f"no top item ({s.label})"
    elif (
        claim.n_items is not None
        and xs
        and len(xs) != claim.n_items
        and (claim.kind == "top_k" or (claim.kind == "location" and claim.depth is None))
    ):  # absolute layers of a model of another depth
        got = (
            f"the measured profile has {len(xs)} {'heads' if claim.n_heads else 'layers'}, the expected one "
            f"{claim.n_items}: a claim on absolute layers of another depth cannot hold (claim the relative depth)"
        )
    elif claim.kind == "location":
        top = ranking[0]
        n = series.get("n_layers") or claim.n_items or len(ranking)
        depth = relative_depth(item_layer(top, series), n)
        if claim.depth is not None:
            value = depth
            ok = abs(depth - claim.depth) <= claim.tolerance
            got = f"top {name(top)} at relative depth {depth:.3g} of {n} layers"
        else:
            dist = abs(item_layer(top, series) - item_layer(claim.layer, series or {"n_heads": claim.n_heads}))
            value = float(item_layer(top, series))
            ok = dist <= claim.within and (claim.within > 0 or claim.n_heads is None or top == claim.layer)
            got = f"top {name(top)} (depth {depth:.3g}), {dist} layer(s) from {name(claim.layer)}"
    elif claim.kind == "top_k":
        k = len(claim.layers)
        measured = ranking[:k]
        common = [x for x in claim.layers if x in measured]
        value = float(len(common))
        ok = len(common) >= claim.min_common
        missing = [name(x) for x in claim.layers if x not in measured]
        got = f"top-{k} {', '.join(name(x) for x in measured)}: {len(common)} of the expected" + (
            f" (missing {', '.join(missing)})" if missing else ""
        )
    else:
        xs, ys = list(series.get("x") or []), list(series.get("y") or [])
        have = {int(x): y for x, y in zip(xs, ys) if y is not None}
        common = [i for i in claim.items if i in have]
        if claim.n_items is not None and len(xs) != claim.n_items:  # absolute layers of a model of another depth
            got = (
                f"the measured profile has {len(xs)} {'heads' if claim.n_heads else 'layers'}, the expected one "
                f"{claim.n_items}: a profile over absolute layers of another depth cannot match"
            )
        elif len(common) < 3:
            got = f"only {len(common)} of the expected profile's {len(claim.items)} items measured"
        else:
            exp = [claim.profile[claim.items.index(i)] for i in common]
            got_vals = [have[i] for i in common]
            value = rank_correlation(exp, got_vals)
            ok = value >= claim.min_rho
            re_, rg = _ranks(exp), _ranks(got_vals)
            j = max(range(len(common)), key=lambda t: (abs(re_[t] - rg[t]), -t))
            n = len(common)
            got = (
                f"rank correlation {value:.3g} with the expected profile; largest move {name(common[j])} "
                f"(rank {n - rg[j]:.0f} of {n}, expected {n - re_[j]:.0f})"
            )
    msg = head + got + f"; expected {claim.expectation()}" + ("" if ok else " -> FAIL")
    return Evaluation(
        claim,
        tuple(models),
        ok,
        f"{claim.kind} of {claim.statistic}",
        value,
        None,
        None,
        claim.expectation(),
        msg,
        None,
        None,
        s.series if s is not None else None,
        {},
    )


def _ranks(v) -> list[float]:
    """Average ranks (0-based, ties share their mean rank)."""
    import numpy as np

    v = np.asarray(v, dtype=float)
    order = np.argsort(v, kind="stable")
    ranks = np.empty(len(v))
    ranks[order] = np.arange(len(v))
    for val in np.unique(v):
        idx = v == val
        ranks[idx] = ranks[idx].mean()
    return list(ranks)


def rank_correlation(a, b) -> float:
    """Spearman's rank correlation of two equally long sequences (0 where either is constant)."""
    import numpy as np

    ra, rb = np.asarray(_ranks(a)), np.asarray(_ranks(b))
    if ra.std() == 0 or rb.std() == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def _evidence(ev: Mapping) -> str:
    return ", ".join(f"{k} {v:.4g}" if isinstance(v, (int, float)) else f"{k} {v}" for k, v in ev.items())


def _check(claim: Claim, value) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    if claim.kind == "value":
        return abs(value - claim.expected) <= claim.tolerance
    if claim.kind == "at_least":
        return value >= claim.threshold
    if claim.kind == "at_most":
        return value <= claim.threshold
    raise AtlasError(f"claim {claim.id}: kind {claim.kind} is not a value check")


def tolerance(half_width: float, magnitude: float, *, k: float, floor: float, rel: float) -> float:
    """How far a measured value may move: ``max(k * half_width, floor, rel * |magnitude|)`` (half_width: of its
    bootstrap interval)."""
    return max(k * half_width, floor, rel * abs(magnitude))
