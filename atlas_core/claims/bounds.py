"""The bounds of the claims ``atlas claims write`` writes (:mod:`atlas_core.claims.writing`), each taken from the
runs' bootstrap intervals: the tolerance of a value claim, and the location, top-k, profile and per-layer value
claims of a per-layer (per-head) profile statistic. Apart from the writer, which assembles, checks and stores them."""

from __future__ import annotations

from atlas_core.claims.evaluation import format_estimate, tolerance
from atlas_core.verdicts import Stat

# An interval from at least this many prompts is stable enough to set a tolerance alone (the bootstrap's half-width
# of a mean over 96 prompts moves by a few percent between resamplings; over 12, by far more)
STABLE_N = 24
# ... and then the tolerance is its 95% half-width itself: the claim holds the value within its bootstrap interval
# (a rerun on the same prompts moves it by rounding only, ~1e-4 relative; a model that differs by more than the
# prompts' sampling noise fails)
STABLE_K = 1.0
# A tolerance set from an interval is never below this many golden tolerances (the golden check's relative
# tolerance of the statistic's experiment is itself about 3x the deviation measured between CPUs and thread counts
# by fixtures/golden/thread_deviation.py; so about 10x it): a rerun at another thread count cannot fail it
RERUN_MARGIN = 3.0


def _golden_rel(name: str) -> float:
    from atlas_core.spec import GOLDEN_REL, groups

    spec = groups().get(name.split(".")[0])
    return spec.golden_rel if spec is not None else GOLDEN_REL


def value_tolerance(s: Stat, k: float, floor: float, rel: float, name: str = "") -> float:
    """``STABLE_K`` x the bootstrap half-width where the interval is stable (from at least ``STABLE_N`` prompts, not
    degenerate), never below ``RERUN_MARGIN`` golden tolerances; otherwise (no interval, a degenerate one, or one
    from few prompts) the loose rule ``max(k * half-width, floor, rel * |value|)``."""
    hw, v = s.half_width or 0.0, s.value or 0.0
    if hw > 0 and (s.n or 0) >= STABLE_N:
        return max(STABLE_K * hw, RERUN_MARGIN * _golden_rel(name) * abs(v))
    return tolerance(hw, v, k=k, floor=floor, rel=rel)


def six_digits(x: float) -> str:
    """``x`` to six significant digits, as a claims file holds a number."""
    return repr(float(f"{float(x):.6g}"))


def _rivals(s: Stat, rel: float = 0.02) -> list[int]:
    """The items that could be the top of profile ``s``: those whose bootstrap interval reaches the top's
    (without intervals: within ``rel`` of the top's value, a margin far above fp32 rounding)."""
    ser = s.series or {}
    xs, ys = list(ser.get("x") or []), list(ser.get("y") or [])
    los, his = ser.get("lo"), ser.get("hi")
    top = s.ranking[0]
    t = xs.index(top)
    if los and his and los[t] is not None:
        return [x for x, h in zip(xs, his) if h is not None and h >= los[t]]
    return [x for x, y in zip(xs, ys) if y is not None and y >= ys[t] - rel * abs(ys[t])]


def where_claims(model: str, name: str, s: Stat, *, k: int = 3, draws: int = 400, seed: int = 0) -> list[dict]:
    """Location, top-k and profile claims of one per-layer (per-head) profile statistic, each bound taken
    from its bootstrap intervals (:func:`_rivals`; the profile's rank correlation: the 1st percentile over
    ``draws`` profiles drawn within the intervals, less 0.05)."""
    import numpy as np

    from atlas_core.claims.evaluation import rank_correlation
    from atlas_core.layers import item_layer, item_name
    from atlas_core.stat import relative_depth

    ser = s.series or {}
    xs, ys = list(ser.get("x") or []), list(ser.get("y") or [])
    if s.tie or not s.ranking or s.value is None or len(xs) < 4 or any(y is None for y in ys):
        return []
    nh, n_layers = ser.get("n_heads"), int(ser.get("n_layers") or len(xs))
    extra = {"n_heads": int(nh)} if nh else {}
    top, rivals = s.ranking[0], _rivals(s)
    lay = lambda x: item_layer(x, ser)  # noqa: E731
    within = max(abs(lay(x) - lay(top)) for x in rivals)
    depths = [relative_depth(lay(x), n_layers) for x in rivals]
    d0 = relative_depth(lay(top), n_layers)
    dtol = max(abs(d - d0) for d in depths) + 0.5 / max(n_layers - 1, 1)  # and half a layer
    tag, what = item_name(top, ser), ("head" if nh else "layer")
    base = {"model": model, "statistic": name}
    out = [
        {
            "id": f"{model}:{name}.top",
            **base,
            "kind": "location",
            "layer": int(top),
            "within": int(within),
            "n_items": len(xs),
            **extra,
            "description": f"the top {what} of {name} is {tag} (± {within} layers: the {what}s whose interval reaches its) on {model}",
        },
        {
            "id": f"{model}:{name}.top_depth",
            **base,
            "kind": "location",
            "depth": float(six_digits(d0)),
            "tolerance": float(six_digits(dtol)),
            "n_items": len(xs),
            **extra,
            "description": f"the top {what} of {name} sits at relative depth {d0:.3g} on {model}",
        },
    ]
    kk = min(k, len(xs) - 1)
    if kk >= 2:
        ranked = list(s.ranking)
        val = dict(zip(xs, ys))
        los, his = ser.get("lo"), ser.get("hi")
        if los and his:
            lo_of, hi_of = dict(zip(xs, los)), dict(zip(xs, his))
            clear = (
                lo_of[ranked[kk - 1]] is not None
                and hi_of[ranked[kk]] is not None
                and lo_of[ranked[kk - 1]] > hi_of[ranked[kk]]
            )
        else:
            clear = val[ranked[kk - 1]] - val[ranked[kk]] > 0.02 * abs(val[ranked[0]])
        top_k = ranked[:kk]
        out.append(
            {
                "id": f"{model}:{name}.top{kk}",
                **base,
                "kind": "top_k",
                "layers": [int(x) for x in top_k],
                "min_common": kk if clear else kk - 1,
                "n_items": len(xs),
                **extra,
                "description": f"the top {kk} {what}s of {name} on {model}: "
                + ", ".join(item_name(x, ser) for x in top_k),
            }
        )
    y = np.asarray(ys, dtype=float)
    los, his = ser.get("lo"), ser.get("hi")
    if los and his and all(v is not None for v in los + his):
        sd = (np.asarray(his, float) - np.asarray(los, float)) / 3.92
    else:
        sd = 0.02 * np.abs(y) + 1e-12
    rng = np.random.default_rng(seed)
    rhos = [rank_correlation(y, y + rng.normal(0.0, 1.0, len(y)) * sd) for _ in range(draws)]
    bound = float(min(np.percentile(rhos, 1) - 0.05, 0.99))
    out.append(
        {
            "id": f"{model}:{name}.profile",
            **base,
            "kind": "profile",
            "items": [int(x) for x in xs],
            "profile": [float(six_digits(v)) for v in ys],
            "min_rho": float(six_digits(bound)),
            "n_items": len(xs),
            **extra,
            "description": f"the {what} profile of {name} on {model} (rank correlation >= {bound:.3g}: the 1st "
            f"percentile over {draws} profiles drawn within its intervals, less 0.05)",
        }
    )
    return out


def layer_value_claims(
    model: str, name: str, s: Stat, *, k: float = 2.0, floor: float = 0.01, rel: float = 0.1, most: int = 8
) -> list[tuple[dict, float]]:
    """Value claims of a per-layer profile at the model's distinctive layers, each with the tolerance it may be
    tightened to. The distinctive layers are the profile's features: its top layer, the layer after its steepest
    rise and the layer after its steepest fall (a peak's flanks, a monotone profile's knee), then the layers whose
    value lies at least two tolerances from the profile's median, farthest first (``most`` in all), leaving out a layer
    whose value is the statistic's null (no effect), whose interval is degenerate, or whose tolerance reaches the
    profile's median (it would not tell this layer from a typical one). Stated at absolute layers:
    another model, or the layers reordered, moves them."""
    import numpy as np

    from atlas_core.spec import declaration

    ser = s.series or {}
    xs, ys = list(ser.get("x") or []), list(ser.get("y") or [])
    if s.tie or not s.ranking or len(xs) < 4 or any(y is None for y in ys):
        return []
    los, his = ser.get("lo"), ser.get("hi")
    has = bool(los and his and all(v is not None for v in list(los) + list(his)))
    y = np.asarray(ys, dtype=float)
    d = np.diff(y)
    features = [("top", xs.index(s.ranking[0])), ("rise", int(np.argmax(d)) + 1), ("fall", int(np.argmin(d)) + 1)]
    # then the layers that stand out most from the profile's median, in units of their own tolerance
    hw = (np.asarray(his, float) - np.asarray(los, float)) / 2 if has else np.zeros(len(y))
    tols = np.maximum(
        STABLE_K * hw if (ser.get("n") or 0) >= STABLE_N else k * hw,
        np.where(hw > 0, 0.0, np.maximum(floor, rel * np.abs(y))),
    )
    z = np.abs(y - np.median(y)) / np.where(tols > 0, tols, np.inf)
    features += [("apart", int(i)) for i in sorted(range(len(xs)), key=lambda i: (-z[i], i)) if z[i] >= 2.0]
    decl = declaration(name)
    out, seen = [], set()
    for what, i in features:
        if len(out) >= most:
            break
        if i in seen or (what == "rise" and d[i - 1] <= 0) or (what == "fall" and d[i - 1] >= 0):
            continue
        seen.add(i)
        st = Stat(
            float(y[i]),
            float(los[i]) if has else None,
            float(his[i]) if has else None,
            ser.get("n") if has else None,
            kind="estimate" if has else "value",
        )
        tol = value_tolerance(st, k, floor, rel, name)
        if (
            (has and not (st.half_width or 0) > 0)
            or (decl and decl.null is not None and abs(y[i] - decl.null) <= tol)
            or abs(y[i] - np.median(y)) <= tol
        ):
            continue  # nothing measured there, a degenerate interval, or a value the profile's median lies within
        x = int(xs[i])
        shown = format_estimate(st.value, st.lo, st.hi)
        why = {
            "top": "its top layer",
            "rise": "after its steepest rise",
            "fall": "after its steepest fall",
            "apart": f"{abs(y[i] - np.median(y)) / tol:.3g} tolerances from the profile's median",
        }[what]
        out.append(
            (
                {
                    "id": f"{model}:{name}.L{x}",
                    "model": model,
                    "statistic": name,
                    "kind": "value",
                    "layer": x,
                    "expected": float(six_digits(st.value)),
                    "tolerance": float(six_digits(tol)),
                    "description": f"{name} at L{x} = {shown} on {model} ({why})",
                },
                k * (st.half_width or 0.0),
            )
        )
    return out
