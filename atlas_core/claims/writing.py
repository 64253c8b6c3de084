"""``atlas claims write``: a claims file from stored runs, each claim checked by the hygiene rules as it is
written (tightened to its bootstrap interval or dropped where it could not fail; the header lists which)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Mapping, Sequence

from atlas_core import AtlasError
from atlas_core.claim_hygiene import refusal
from atlas_core.claims.evaluation import format_estimate, tolerance
from atlas_core.claims.files import load_claims, parse_claim
from atlas_core.profiles import PROFILES
from atlas_core.results import atomic_write_text
from atlas_core.runs import load_run
from atlas_core.spec import declaration, default_thresholds, experiments, hypotheses
from atlas_core.verdicts import Stat, decide


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


def _tolerance(s: Stat, k: float, floor: float, rel: float, name: str = "") -> float:
    """``STABLE_K`` x the bootstrap half-width where the interval is stable (from at least ``STABLE_N`` prompts, not
    degenerate), never below ``RERUN_MARGIN`` golden tolerances; otherwise (no interval, a degenerate one, or one
    from few prompts) the loose rule ``max(k * half-width, floor, rel * |value|)``."""
    hw, v = s.half_width or 0.0, s.value or 0.0
    if hw > 0 and (s.n or 0) >= STABLE_N:
        return max(STABLE_K * hw, RERUN_MARGIN * _golden_rel(name) * abs(v))
    return tolerance(hw, v, k=k, floor=floor, rel=rel)


@dataclass
class _Writer:
    """Claims entries for ``write_claims``, each checked by the hygiene rules as it is added: a value claim
    that cannot fail is tightened to ``k`` x its bootstrap half-width where that makes it falsifiable, and
    dropped otherwise; ``notes`` say which and why."""

    thresholds: Mapping[str, Mapping]
    sampled: bool
    meta: dict
    body: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: {"kept": 0, "tightened": 0, "dropped": 0})
    blind: Mapping[str, str] = field(default_factory=dict)  # claim id -> the wrong inputs it passed (audit)

    def add(self, entry: dict, tight: float | None = None) -> None:
        if entry["id"] in self.blind:
            self.counts["dropped"] += 1
            self.notes.append(
                f"dropped {entry['id']}: it passes every wrong input the audit made from these runs "
                f"({self.blind[entry['id']]}), so it cannot tell this model from another; more prompts "
                "(a larger profile) would narrow it"
            )
            return
        decl = declaration(entry["statistic"])
        if decl is not None and decl.invariant and entry["kind"] not in ("location", "top_k", "profile"):
            entry = {**entry, "invariant": decl.invariant}
        claim = parse_claim(entry, self.meta)
        why = refusal(claim, self.thresholds, self.sampled)
        if why and claim.kind == "value" and tight is not None and 0 < tight < claim.tolerance:
            looser = claim.tolerance
            entry = {**entry, "tolerance": float(_n(tight))}
            claim = parse_claim(entry, self.meta)
            if refusal(claim, self.thresholds, self.sampled) is None:
                self.counts["tightened"] += 1
                self.notes.append(
                    f"tightened {claim.id}: ± {looser:.4g} -> ± {claim.tolerance:.4g} ({_first_clause(why)})"
                )
                why = None
        if why:
            self.counts["dropped"] += 1
            self.notes.append(f"dropped {claim.id}: {why}")
            return
        self.counts["kept"] += 1
        self.body += ["[[claim]]"] + [f"{key} = {_v(val)}" for key, val in entry.items()] + [""]


def _anchor(name: str, s: Stat) -> dict:
    """The item a value read at one item of a profile names (``StatDecl.at``): its claim reads the profile there,
    so that a model whose value sits at another layer (or head) fails it. Nothing for other statistics."""
    decl, at = declaration(name), (s.series or {}).get("at")
    if decl is None or decl.at is None or at is None:
        return {}
    nh = (s.series or {}).get("n_heads")
    return {"layer": int(at), **({"n_heads": int(nh)} if decl.at == "head" and nh else {})}


def _first_clause(why: str) -> str:
    return why.split(";")[0]


def write_claims(
    run_dirs: Sequence[str | Path],
    out: str | Path,
    label: str | None = None,
    *,
    k: float = 2.0,
    floor: float = 0.01,
    rel: float = 0.1,
    rank: int = 3,
    substitutes: Sequence[str | Path] | None = None,
) -> Path:
    """Write a claims file from one run (finding claims) or two runs of a pair, small then large
    (finding claims for both plus a verdict and a statistic claim per hypothesis). Tolerance of a
    value claim: ``max(k * half-width of its bootstrap interval, floor, rel * |value|)``, tightened to
    ``k * half-width`` or dropped where the hygiene rules say it cannot fail (the file lists each);
    observed verdicts become the expected verdicts; provenance records each run's weights, profile and date.
    A pair's file is then audited on its own runs and on ``substitutes``, other models' runs of the same profile
    (default: the committed baselines of that profile; ``claims.audit``): a claim that passes every wrong input
    (and is no declared invariant) asserts nothing about its model, and is dropped with the inputs it passed."""
    path = _write_claims(run_dirs, out, label, k=k, floor=floor, rel=rel, rank=rank)
    if len(run_dirs) != 2:
        return path
    from atlas_core.claims.audit import audit, baseline_runs

    if substitutes is None:
        substitutes = baseline_runs(load_claims(path).profile)
    blind = {r.claim.id: ", ".join(r.outcomes) for r in audit(path, [*run_dirs, *substitutes]).blind}
    return _write_claims(run_dirs, out, label, k=k, floor=floor, rel=rel, rank=rank, blind=blind) if blind else path


def _write_claims(
    run_dirs: Sequence[str | Path],
    out: str | Path,
    label: str | None = None,
    *,
    k: float,
    floor: float,
    rel: float,
    rank: int,
    blind: Mapping[str, str] | None = None,
) -> Path:
    runs = [load_run(d) for d in run_dirs]
    if not 1 <= len(runs) <= 2:
        raise AtlasError(f"claims write takes one run or a pair (small then large), got {len(runs)}")
    profiles = {r.profile or "?" for r in runs}
    if len(profiles) != 1:
        raise AtlasError(
            f"the runs were made at different profiles ({', '.join(sorted(profiles))}); "
            "write claims from runs of one profile"
        )
    profile = profiles.pop()
    models = [r.name for r in runs]
    if len(set(models)) != len(models):
        raise AtlasError(f"both runs are of {models[0]}: a pair is two different models (small then large)")
    thresholds = default_thresholds()
    prof = PROFILES.get(profile)
    w = _Writer(
        thresholds,
        prof is not None and prof.head_layers is not None,
        {"source": "measured", "profile": profile, "models": models},
        blind=blind or {},
    )
    for r in runs:
        for spec in experiments().values():
            group = spec.group
            for pattern in spec.claims:
                for name in _expand(pattern, r.stats):
                    s = r.stats[name]
                    if s.value is None or not math.isfinite(s.value):
                        continue
                    w.add(
                        {
                            "id": f"{r.name}:{name}",
                            "model": r.name,
                            "statistic": name,
                            "kind": "value",
                            "expected": float(_n(s.value)),
                            "tolerance": float(_n(_tolerance(s, k, floor, rel, name))),
                            **_anchor(name, s),
                            "description": f"{name} = {s.text()} on {r.name}",
                        },
                        k * (s.half_width or 0.0),
                    )
            for decl in spec.declares:
                if decl.axis not in ("layer", "head"):
                    continue
                for name in sorted(n for n in r.stats if decl.matches(n) and declaration(n) is decl):
                    for entry in where_claims(r.name, name, r.stats[name]):
                        w.add(entry)
                    if decl.axis == "layer":
                        for entry, tight in layer_value_claims(r.name, name, r.stats[name], k=k, floor=floor, rel=rel):
                            w.add(entry, tight)
            if spec.ranked:
                stat, what = spec.ranked
                st = r.stats.get(stat)
                if st is None or st.tie or not st.ranking:
                    continue
                top, key = st.ranking[0], "family" if group == "lora" else "layer"
                name = top if group == "lora" else f"L{top}"
                w.add(
                    {
                        "id": f"{r.name}:{group}.rank.{name}",
                        "model": r.name,
                        "statistic": stat,
                        "kind": "rank",
                        key: top,
                        "max_rank": min(rank, len(st.ranking) - 1),
                        "description": f"{name} ranks top-{min(rank, len(st.ranking) - 1)} by {what} on {r.name}",
                    }
                )
    if len(runs) == 2:
        small, large = runs
        for hid, hyp in hypotheses().items():
            try:
                v = decide(hid, small.stats, large.stats, thresholds[hid])
            except AtlasError as exc:
                w.notes.append(f"no {hid} claims: {exc}")
                continue  # that experiment is not in both runs, or the profile cannot measure it
            measured = format_estimate(v.value, v.lo, v.hi)
            w.add(
                {
                    "id": hid,
                    "statistic": hid,
                    "kind": "verdict",
                    "expected_verdict": v.verdict,
                    "description": f"{hyp.text}: {v.verdict} ({v.statistic} {measured})",
                }
            )
            if v.value is not None and math.isfinite(v.value):
                st = Stat(v.value, v.lo, v.hi)
                w.add(
                    {
                        "id": f"{hid}.statistic",
                        "statistic": hid,
                        "kind": "value",
                        "expected": float(_n(v.value)),
                        "tolerance": float(_n(_tolerance(st, k, floor, rel))),
                        "description": f"{v.statistic} = {measured}",
                    },
                    k * (st.half_width or 0.0),
                )
    lines = [
        "# Generated by `atlas claims write` from the suite's own runs; regenerate, do not hand-edit.",
        f"# Claim hygiene (atlas_core.claim_hygiene): {w.counts['kept']} claims kept "
        f"({w.counts['tightened']} tightened to {k:g} x the bootstrap half-width), {w.counts['dropped']} dropped:",
    ]
    lines += [f"#   {n}" for n in w.notes]
    lines += [
        "[meta]",
        f"label = {_q(label or ' vs '.join(models) + f' ({profile} profile)')}",
        'source = "measured"',
        f"profile = {_q(profile)}",
        f"models = {_list(models)}",
        f"generated = {_q(time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()))}",
        f"tolerance_rule = {_q(f'{STABLE_K:g} * bootstrap half-width (an interval from >= {STABLE_N} prompts; at least {RERUN_MARGIN:g} golden tolerances), else max({k:g} * bootstrap half-width, {floor:g}, {rel:g} * |value|)')}",
        "",
    ]
    for r in runs:
        versions = r.records[r.experiments[0]].provenance.get("versions", {})
        lines += [
            f"[meta.provenance.{_q(r.name)}]",
            f"run = {_q(str(r.root))}",
            f"weights_sha256 = {_q(r.model.get('weights_sha256', ''))}",
            f"profile = {_q(profile)}",
            f"dtype = {_q(r.model.get('dtype', ''))}",
            f"device = {_q(r.model.get('device', ''))}",
            f"torch = {_q(versions.get('torch', ''))}",
            f"transformers = {_q(versions.get('transformers', ''))}",
            "experiments = {" + ", ".join(f"{e} = {_q(r.records[e].config_hash)}" for e in sorted(r.experiments)) + "}",
            "",
        ]
    for hid, th in thresholds.items():
        lines += [f"[thresholds.{hid}]"] + [f"{key} = {_v(val)}" for key, val in th.items()] + [""]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, "\n".join(lines + w.body))
    load_claims(out)  # what was written must read back
    return out


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
            "depth": float(_n(d0)),
            "tolerance": float(_n(dtol)),
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
            "profile": [float(_n(v)) for v in ys],
            "min_rho": float(_n(bound)),
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
        tol = _tolerance(st, k, floor, rel, name)
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
                    "expected": float(_n(st.value)),
                    "tolerance": float(_n(tol)),
                    "description": f"{name} at L{x} = {shown} on {model} ({why})",
                },
                k * (st.half_width or 0.0),
            )
        )
    return out


def _expand(pattern: str, stats: Mapping[str, Stat]) -> list[str]:
    return sorted(n for n in stats if fnmatchcase(n, pattern))


def _q(s: str) -> str:
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") + '"'


def _n(x: float) -> str:
    return repr(float(f"{float(x):.6g}"))


def _v(x) -> str:
    if isinstance(x, (list, tuple)):
        return "[" + ", ".join(_v(v) for v in x) + "]"
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, (int, float)):
        return repr(x)
    return _q(x)


def _list(xs) -> str:
    return "[" + ", ".join(_q(x) for x in xs) + "]"
