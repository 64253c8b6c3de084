"""Decision rules and finding statistics: measured numbers in, verdicts and named statistics out.

Two layers, both pure (no model, no files):

- *Finding statistics* of one model: ``model_statistics(results, n_layers)`` turns the stored result
  JSON of each experiment (the dataclasses of ``atlas_core.experiments.schema``, as dicts) into named
  ``Stat`` values such as ``hub.top_layer_kl`` or ``steering.best_boost``, each with its bootstrap
  interval where the experiment measured one and a small series for plots. Claims, comparisons
  and reports all read these names.
- *Decision rules* ``h001`` … ``h008``: the study's hypotheses as functions of a small and a large
  model's statistics, with every threshold passed in (claims files hold them), returning a
  ``Verdict`` in {supported, partially supported, weakened, rejected} with its evidence.
  ``decide(hid, small, large, thresholds)`` picks the statistics each rule needs.

Relative depth is ``layer / (n_layers - 1)`` (first layer 0, last layer 1). The "final fraction" a
set of layers occupies is ``(n_layers - min(layers)) / n_layers``: the study's "final ~10%" is the
last 3 of 28 layers (10.7%) and the last 3 of 24 (12.5%).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping

from atlas_core import AtlasError
from atlas_core.metrics import correlation_ci, is_tie, spearman

SUPPORTED = "supported"
PARTIAL = "partially supported"
WEAKENED = "weakened"
REJECTED = "rejected"
VERDICTS = (SUPPORTED, PARTIAL, WEAKENED, REJECTED)

HYPOTHESES: dict[str, str] = {
    "H001": "Universal hub persists at the same relative depth",
    "H002": "Specialist attention heads emerge at scale",
    "H003": "Steering leverage scales with capacity",
    "H004": "Skill knockout selectivity preserved at scale",
    "H005": "Cross-model transfer zone defined by relative depth",
    "H006": "MLP dominance scales with parameters",
    "H007": "Mid-layer redundancy emerges at scale",
    "H008": "Adapter norm predicts functional impact",
}

# Which experiment each hypothesis and each statistic group reads.
HYPOTHESIS_EXPERIMENTS: dict[str, tuple[str, ...]] = {
    "H001": ("layer_ablation",), "H002": ("head_ablation",), "H003": ("steering",), "H004": ("knockout",),
    "H005": ("transfer",), "H006": ("mlp_ablation",), "H007": ("efficiency",), "H008": ("adapter_ablation",),
}
GROUP_EXPERIMENTS: dict[str, tuple[str, ...]] = {
    "clean": ("clean",), "hub": ("layer_ablation",), "heads": ("head_ablation",), "steering": ("steering",),
    "knockout": ("knockout",), "lora": ("lora_training",), "transfer": ("transfer",),
    "mlp": ("mlp_ablation",), "adapter": ("adapter_ablation",), "efficiency": ("efficiency",),
}
# Statistics that also need a second experiment.
EXTRA_EXPERIMENTS: dict[str, tuple[str, ...]] = {"mlp.share_of_top_layer": ("layer_ablation",)}
FINDINGS = ("hub", "heads", "steering", "knockout", "transfer", "mlp")
# Groups whose finding claims a test runs: the headline findings, LoRA's per-family shift and early exit.
CLAIM_GROUPS = FINDINGS + ("lora", "efficiency")
EXIT_SKIPS = (1, 2, 4, 10)  # early exits the study tabulates, by layers skipped (efficiency.exit.skipN.*)

# The defaults ``atlas claims write`` puts in a new claims file (a claims file may change them).
DEFAULT_THRESHOLDS: dict[str, dict[str, Any]] = {
    "H001": {"tolerance": 0.1},
    "H002": {"min_ratio": 2.0},
    "H003": {"min_ratio": 1.0, "reject_below": 0.5, "min_boost": 0.01, "boost": "best_boost"},
    "H004": {"min_ratio": 0.5, "reject_below": 0.1, "min_selectivity": 1.0},
    "H005": {"max_fraction": 0.5, "tolerance": 0.1},
    "H006": {"min_ratio": 1.0, "reject_below": 1.0},
    "H007": {"threshold": 0.5, "min_gain": 0.05},
    "H008": {"high": 0.7, "low": 0.3, "drop_tolerance": 0.2},
}


@dataclass(frozen=True)
class Stat:
    """One named measurement. ``kind``: ``estimate`` (bootstrap interval lo..hi over prompts),
    ``value`` (a float without interval), ``index`` (a layer or head number: compared exactly) or
    ``ranking`` (``value`` is the top item, ``ranking`` the full order, strongest first)."""

    value: float | None
    lo: float | None = None
    hi: float | None = None
    n: int | None = None
    kind: str = "value"
    ranking: tuple[int, ...] | None = None
    label: str | None = None  # what the number refers to, e.g. "L26" or "arithmetic L0 H3"
    series: dict | None = field(default=None, compare=False)
    tie: bool = False  # every candidate scored the same: there is no top item (``value`` is None)

    @property
    def half_width(self) -> float | None:
        if self.lo is None or self.hi is None:
            return None
        return (self.hi - self.lo) / 2

    def text(self, fmt: str = ".4g") -> str:
        """``value [lo, hi]`` (or the value alone when there is no interval)."""
        if self.value is None:
            return f"none ({self.label})" if self.tie else "n/a"
        v = f"{self.value:{fmt}}"
        if self.lo is not None and self.hi is not None:
            v += f" [{self.lo:{fmt}}, {self.hi:{fmt}}]"
        return v + (f" ({self.label})" if self.label else "")


@dataclass(frozen=True)
class Verdict:
    """A decision rule's outcome: the verdict, the decisive statistic and the evidence behind it."""

    hypothesis: str
    verdict: str
    statistic: str  # name of the decisive number, e.g. "boost ratio large/small"
    value: float
    lo: float | None
    hi: float | None
    rule: str  # the rule with its thresholds, for messages
    evidence: dict[str, float | None] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------
# helpers


def relative_depth(layer: float, n_layers: int) -> float:
    """``layer / (n_layers - 1)``: 0 for the first layer, 1 for the last."""
    if n_layers < 2:
        return 0.0
    return float(layer) / (n_layers - 1)


def final_fraction(layers, n_layers: int) -> float:
    """The fraction of the model's layers from the shallowest of ``layers`` to the end."""
    layers = list(layers)
    if not layers or n_layers < 1:
        return float("nan")
    return (n_layers - min(layers)) / n_layers


def _est(d: Mapping | None, **kw) -> Stat:
    if d is None:
        return Stat(None, kind="estimate", **kw)
    return Stat(_f(d.get("value")), _f(d.get("lo")), _f(d.get("hi")), d.get("n"), kind="estimate", **kw)


def _f(x) -> float | None:
    return None if x is None else float(x)


def _ratio(a: float | None, b: float | None) -> float:
    """a / b, with b == 0 giving +-inf (or nan for 0/0) instead of an exception."""
    if a is None or b is None:
        return float("nan")
    if b == 0:
        return float("nan") if a == 0 else math.copysign(math.inf, a)
    return a / b


def ratio_stat(num: Stat, den: Stat, **kw) -> Stat:
    """num / den, with a conservative interval (lo_num/hi_den, hi_num/lo_den) when both intervals
    exist and are positive."""
    value = _ratio(num.value, den.value)
    lo = hi = None
    if None not in (num.lo, num.hi, den.lo, den.hi) and num.lo > 0 and den.lo > 0:
        lo, hi = num.lo / den.hi, num.hi / den.lo
    return Stat(value, lo, hi, kind="estimate" if lo is not None else "value", **kw)


def _series(x, y, xlabel: str, ylabel: str) -> dict:
    return {"x": [float(v) if v is not None else None for v in x],
            "y": [float(v) if v is not None else None for v in y], "xlabel": xlabel, "ylabel": ylabel}


def _primary(result: Mapping) -> Mapping:
    sweeps = result.get("sweeps") or []
    if not sweeps:
        raise AtlasError("the stored ablation result has no sweeps: re-run the experiment (atlas run ...)")
    key = result.get("primary")
    return next((s for s in sweeps if f"{s['target']}/{s['mode']}" == key), sweeps[0])


# ----------------------------------------------------------------------------------------------
# finding statistics of one model


def _sweep_stats(prefix: str, sweep: Mapping, n_layers: int) -> dict[str, Stat]:
    """The top layer of an ablation sweep, its KL, depth and rank order. When every layer gives the same
    KL (:func:`atlas_core.metrics.is_tie`: zeroing the whole residual of a model without biases) there is
    no top layer: the layer, depth and ranking are None with ``tie`` set, and the KL is the common value."""
    layers, fmk = list(sweep["layers"]), list(sweep["family_mean_kl"])
    ranking = tuple(int(v) for v in sweep["ranking"])
    tie = is_tie(fmk)
    top = ranking[0]
    i = layers.index(top)
    est = sweep["mean_kl"][i]
    shift = fmk[i] - (est.get("value") or 0.0)  # interval of the all-prompt mean, centred on the family mean
    series = _series(layers, fmk, "layer", "mean KL over families (nats)")
    label = f"all {len(layers)} layers tie" if tie else f"L{top}"
    at = None if tie else float(top)
    out = {
        f"{prefix}.ranking": Stat(at, kind="ranking", ranking=() if tie else ranking, label=label, series=series,
                                  tie=tie),
        f"{prefix}.top_layer": Stat(at, kind="index", label=label, series=series, tie=tie),
        f"{prefix}.top_layer_depth": Stat(None if tie else relative_depth(top, n_layers),
                                          label=label if tie else f"L{top} of {n_layers}", tie=tie),
        f"{prefix}.top_layer_kl": Stat(fmk[i], _shift(est.get("lo"), shift), _shift(est.get("hi"), shift),
                                       est.get("n"), kind="estimate", label=label, series=series),
    }
    for fam, vals in sweep.get("kl", {}).items():
        out[f"{prefix}.family_kl.{fam}"] = Stat(float(vals[i]), label=label)
    return out


def _shift(x, d):
    return None if x is None else float(x) + d


def hub_stats(result: Mapping, n_layers: int) -> dict[str, Stat]:
    """The hub: the layer whose ablation moves the output most (the primary sweep, the study's
    mean-over-families KL), its KL, its relative depth, its rank order, and its KL per family."""
    return _sweep_stats("hub", _primary(result), n_layers)


def mlp_stats(result: Mapping, n_layers: int, layer_result: Mapping | None = None) -> dict[str, Stat]:
    """The strongest MLP (max MLP-ablation KL, its layer) and, with the layer ablation, the MLP's
    share of the top layer's effect (the study: 2.58 / 13.70 = 19% at 1.5B, 42% at 0.5B)."""
    out = {k.replace("mlp.top_layer_kl", "mlp.max_kl").replace("mlp.top_layer", "mlp.max_layer"): v
           for k, v in _sweep_stats("mlp", _primary(result), n_layers).items()}
    if layer_result is not None:
        hub = hub_stats(layer_result, n_layers)["hub.top_layer_kl"]
        out["mlp.share_of_top_layer"] = ratio_stat(out["mlp.max_kl"], hub, label=f"vs hub {hub.label}")
    return out


def head_stats(result: Mapping, n_layers: int) -> dict[str, Stat]:
    """The strongest single head (family, layer, head, KL), its depth, the strongest head per family
    and, where the layer ablation was known, the layer/head gap (max layer KL / max head KL)."""
    mh = result["max_head"]
    label = f"{mh['family']} L{mh['layer']} H{mh['head']}"
    layers = list(result["layers"])
    grids = list(result["kl"].values())
    per_layer = [max(max(g[i]) for g in grids) for i in range(len(layers))] if grids else []
    series = _series(layers, per_layer, "layer", "max head-ablation KL (nats)")
    out = {
        # the share of layers whose heads were ablated: below 1 the strongest head may sit in a skipped layer
        "heads.layer_coverage": Stat(len(layers) / n_layers, label=f"{len(layers)} of {n_layers} layers"),
        "heads.max_kl": Stat(float(mh["kl"]), label=label, series=series),
        "heads.max_layer": Stat(float(mh["layer"]), kind="index", label=label),
        "heads.max_head": Stat(float(mh["head"]), kind="index", label=label),
        "heads.max_layer_depth": Stat(relative_depth(mh["layer"], n_layers), label=label),
    }
    for fam, grid in result["kl"].items():
        best = max(((v, li, h) for li, row in enumerate(grid) for h, v in enumerate(row)), default=None)
        if best is not None:
            out[f"heads.family_max_kl.{fam}"] = Stat(float(best[0]), label=f"L{layers[best[1]]} H{best[2]}")
    if result.get("max_layer_kl") is not None:
        out["heads.layer_head_gap"] = Stat(_ratio(result["max_layer_kl"], mh["kl"]), label="max layer KL / max head KL")
    return out


def steering_stats(result: Mapping, n_layers: int) -> dict[str, Stat]:
    """Steering leverage: the best mean target-probability boost (over layers and strengths) with its
    interval, where it was found, and the boost at the study's layer."""
    layers = list(result["layers"])
    bl = result["best_layer"]
    label = f"L{bl} x{result['best_strength']:+g}"
    series = _series(result["strengths"], result["boost"][layers.index(bl)], "steering strength",
                     f"mean target-prob boost at L{bl}") if bl in layers else None
    return {
        "steering.best_boost": replace(_est(result["best_boost"]), label=label, series=series),
        "steering.best_layer": Stat(float(bl), kind="index", label=label),
        "steering.best_layer_depth": Stat(relative_depth(bl, n_layers), label=label),
        "steering.best_strength": Stat(float(result["best_strength"]), label=label),
        "steering.study_layer_best_boost": replace(_est(result["study_layer_best_boost"]),
                                                   label=f"L{result['study_layer']}"),
        "steering.baseline_prob": Stat(_f(result["baseline_prob"])),
    }


def knockout_stats(result: Mapping, n_layers: int) -> dict[str, Stat]:
    """Knockout selectivity: the best skill-drop / non-skill-drop ratio, its layer, and the two drops."""
    rows = result["layers"]
    bl = result["best_layer"]
    label = f"L{bl}"
    series = _series([r["layer"] for r in rows], [r["selectivity"] for r in rows], "layer", "selectivity")
    best = next((r for r in rows if r["layer"] == bl), None)
    out = {
        "knockout.best_selectivity": Stat(_f(result["best_selectivity"]), label=label, series=series),
        "knockout.best_layer": Stat(float(bl), kind="index", label=label),
        "knockout.best_layer_depth": Stat(relative_depth(bl, n_layers), label=label),
    }
    if best is not None:
        out["knockout.skill_drop"] = replace(_est(best["skill_drop"]), label=label)
        out["knockout.nonskill_drop"] = replace(_est(best["nonskill_drop"]), label=label)
    return out


def transfer_stats(result: Mapping, n_layers: int, top_k: int = 3) -> dict[str, Stat]:
    """The transfer zone: recovery when patching at the last swept layer, the best layer, and the
    final fraction of depth the top-``top_k`` layers (and the thresholded zone) occupy."""
    layers = list(result["layers"])
    last = max(layers)
    i = layers.index(last)
    rec = result["mean_recovery"]
    top = list(result["top_layers"])[:top_k]
    series = _series(layers, [r.get("value") for r in rec], "layer", "mean KL recovery")
    out = {
        "transfer.final_recovery": replace(_est(rec[i]), label=f"L{last}", series=series),
        "transfer.top_layer": Stat(float(top[0]), kind="index", label=f"L{top[0]}") if top else Stat(None, kind="index"),
        "transfer.top_final_fraction": Stat(final_fraction(top, n_layers), label=f"top {len(top)}: {top}"),
    }
    zone = list(result.get("zone") or [])
    out["transfer.zone_final_fraction"] = Stat(final_fraction(zone, n_layers) if zone else 0.0,
                                               label=f"recovery >= {result.get('zone_threshold')}: {zone}")
    for fam, vals in result.get("recovery", {}).items():
        out[f"transfer.family_final_recovery.{fam}"] = Stat(_f(vals[i]), label=f"L{last}")
    return out


def efficiency_stats(result: Mapping) -> dict[str, Stat]:
    """Layer skipping and early exit: the best top-5 overlap among skip configurations (H007) and
    each configuration's KL and overlap; the best argmax match of an early exit."""
    out: dict[str, Stat] = {}
    cfgs = result.get("skip_configs") or []
    if cfgs:
        best = max(cfgs, key=lambda c: (c["top5_overlap"].get("value") or 0.0))
        series = _series(range(len(cfgs)), [c["top5_overlap"].get("value") for c in cfgs],
                         "skip config (" + ", ".join(c["name"] for c in cfgs) + ")", "top-5 overlap")
        out["efficiency.best_top5_overlap"] = replace(_est(best["top5_overlap"]), label=best["name"], series=series)
        for c in cfgs:
            out[f"efficiency.skip.{c['name']}.top5_overlap"] = replace(_est(c["top5_overlap"]), label=str(c["layers"]))
            out[f"efficiency.skip.{c['name']}.mean_kl"] = replace(_est(c["mean_kl"]), label=str(c["layers"]))
    exits = [e for e in result.get("exits") or [] if e.get("layers_skipped", 0) > 0]
    if exits:
        best = max(exits, key=lambda e: (e["argmax_match"].get("value") or 0.0))
        out["efficiency.best_exit_argmax"] = replace(_est(best["argmax_match"]), label=f"exit L{best['layer']}")
    for e in exits:  # the exits the study tabulates (an exit after the last layer skips nothing: match 1)
        if e["layers_skipped"] in EXIT_SKIPS:
            out[f"efficiency.exit.skip{e['layers_skipped']}.argmax_match"] = replace(
                _est(e["argmax_match"]), label=f"exit L{e['layer']}")
    return out


def adapter_stats(result: Mapping) -> dict[str, Stat]:
    """Adapter ablation: Pearson correlation of adapter norm with ablation effect (H008, the study's
    statistic), and Spearman's rank correlation beside it (one layer far above the rest decides r alone;
    its interval: a bootstrap over layers, 1000 resamples, seed 0, taken here from the stored means)."""
    ci = result.get("pearson_ci") or [None, None]
    top = (result.get("top_layers") or [None])[0]
    kl = [k.get("value") for k in result["kl"]]
    series = _series(result["norm"], kl, "adapter norm", "ablation KL (nats)")
    out = {"adapter.pearson": Stat(_f(result["pearson"]), _f(ci[0]), _f(ci[1]), len(result["layers"]),
                                   kind="estimate" if None not in ci else "value", series=series)}
    pts = [(n, k) for n, k in zip(result["norm"], kl) if n is not None and k is not None]
    if len(pts) >= 2:
        norm, eff = zip(*pts)
        lo, hi = correlation_ci(norm, eff, spearman)
        out["adapter.spearman"] = Stat(_f(spearman(norm, eff)), _f(lo), _f(hi), len(pts), kind="estimate", series=series)
    if top is not None:
        out["adapter.top_layer"] = Stat(float(top), kind="index", label=f"L{top}")
    return out


def lora_stats(result: Mapping) -> dict[str, Stat]:
    """LoRA training: final loss and base -> trained KL per family."""
    out = {"lora.final_loss": Stat(_f(result["final_loss"]))}
    kl = {fam: est for fam, est in result.get("kl_per_family", {}).items() if est.get("value") is not None}
    for fam, est in kl.items():
        out[f"lora.kl.{fam}"] = _est(est)
    if kl:  # families by how far training moved them, most first (the study: json_schema 6.47 first)
        order = tuple(sorted(kl, key=lambda f: -kl[f]["value"]))
        series = _series(range(len(order)), [kl[f]["value"] for f in order], "family (" + ", ".join(order) + ")",
                         "base -> trained KL (nats)")
        out["lora.ranking"] = Stat(None, kind="ranking", ranking=order, label=order[0], series=series)
    return out


def clean_stats(result: Mapping) -> dict[str, Stat]:
    """Clean top-1 accuracy overall and per family (what the model can do before any ablation)."""
    out = {"clean.accuracy": _est(result["overall_accuracy"])}
    for fa in result.get("families", []):
        out[f"clean.accuracy.{fa['family']}"] = _est(fa["top1_accuracy"])
    return out


_EXTRACTORS: dict[str, Callable[..., dict[str, Stat]]] = {
    "clean": lambda r, n, _: clean_stats(r),
    "layer_ablation": lambda r, n, _: hub_stats(r, n),
    "mlp_ablation": lambda r, n, rs: mlp_stats(r, n, rs.get("layer_ablation")),
    "head_ablation": lambda r, n, _: head_stats(r, n),
    "steering": lambda r, n, _: steering_stats(r, n),
    "knockout": lambda r, n, _: knockout_stats(r, n),
    "lora_training": lambda r, n, _: lora_stats(r),
    "transfer": lambda r, n, _: transfer_stats(r, n),
    "adapter_ablation": lambda r, n, _: adapter_stats(r),
    "efficiency": lambda r, n, _: efficiency_stats(r),
}


def model_statistics(results: Mapping[str, Mapping], n_layers: int) -> dict[str, Stat]:
    """Every finding statistic of one model from its stored results (experiment name -> result dict);
    experiments that are absent contribute nothing."""
    out: dict[str, Stat] = {}
    for name, fn in _EXTRACTORS.items():
        if results.get(name) is not None:
            out.update(fn(results[name], n_layers, results))
    return out


def statistic_experiments(name: str) -> tuple[str, ...]:
    """The experiments a statistic (``hub.top_layer_kl``) or hypothesis (``H003``, ``H003.ratio``) reads."""
    head = name.split(".")[0]
    if head in HYPOTHESIS_EXPERIMENTS:
        return HYPOTHESIS_EXPERIMENTS[head]
    if head not in GROUP_EXPERIMENTS:
        raise AtlasError(f"unknown statistic {name!r}: it must start with one of "
                         f"{', '.join(list(GROUP_EXPERIMENTS) + list(HYPOTHESES))}")
    return GROUP_EXPERIMENTS[head] + EXTRA_EXPERIMENTS.get(name, ())


# ----------------------------------------------------------------------------------------------
# decision rules (pure functions of numbers; thresholds are arguments)


def h001(small_depth: float | None, large_depth: float | None, *, tolerance: float) -> Verdict:
    """Supported if the top layer's relative depth differs by at most ``tolerance``, else rejected; rejected
    too when a model has no hub (depth None: every layer's ablation gives the same KL)."""
    diff = None if small_depth is None or large_depth is None else abs(large_depth - small_depth)
    verdict = SUPPORTED if diff is not None and diff <= tolerance else REJECTED
    return Verdict("H001", verdict, "|hub relative depth large - small|", diff, None, None,
                   f"supported if <= {tolerance:g}, else rejected (also when a model has no hub: all layers tie)",
                   {"small_depth": small_depth, "large_depth": large_depth})


def _ratio_rule(hid: str, what: str, small: float, large: float, *, min_ratio: float, reject_below: float,
                middle: str, lo=None, hi=None, evidence=None) -> Verdict:
    if reject_below > min_ratio:
        raise AtlasError(f"{hid}: reject_below ({reject_below}) must not exceed min_ratio ({min_ratio}) in the claims file")
    r = _ratio(large, small)
    if small is not None and small <= 0:  # nothing to scale or preserve at the small scale
        r = math.inf if large is not None and large > 0 else -math.inf
    verdict = SUPPORTED if r >= min_ratio else (REJECTED if (r < reject_below or math.isnan(r)) else middle)
    rule = f"supported if >= {min_ratio:g}, rejected if < {reject_below:g}, else {middle}"
    return Verdict(hid, verdict, f"{what} ratio large/small", r, lo, hi, rule,
                   {"small": small, "large": large, **(evidence or {})})


def h002(small_max_head_kl: float, large_max_head_kl: float, *, min_ratio: float, lo=None, hi=None) -> Verdict:
    """Supported if the strongest head is at least ``min_ratio`` times stronger at the large scale;
    partially supported if stronger but below that; rejected if not stronger. Measurable only where the
    head ablation swept every layer (``decide`` refuses otherwise): a max over sampled layers is a lower
    bound, and the ci profile's three layers skip L1, where Coder-1.5B's strongest head is."""
    return _ratio_rule("H002", "max head KL", small_max_head_kl, large_max_head_kl, min_ratio=min_ratio,
                       reject_below=min(1.0, min_ratio), middle=PARTIAL, lo=lo, hi=hi)


def h003(small_boost: float, large_boost: float, *, min_ratio: float, reject_below: float, min_boost: float = 0.01,
         lo=None, hi=None) -> Verdict:
    """Leverage ratio large / max(small, ``min_boost``): supported if >= ``min_ratio``, rejected if
    < ``reject_below``, weakened in between; rejected when neither model reaches ``min_boost``.

    A small-scale boost below ``min_boost`` (default one point of target probability, a threshold the
    claims file sets) means the small model has no steering leverage to scale from. It counts as
    ``min_boost``, so the ratio stays finite and says how far the large model's leverage rises above
    none (the former rule divided by it and called any large boost infinitely scaled)."""
    if reject_below > min_ratio:
        raise AtlasError(f"H003: reject_below ({reject_below}) must not exceed min_ratio ({min_ratio}) in the claims file")
    den = max(small_boost, min_boost)
    r = large_boost / den
    if small_boost < min_boost and large_boost < min_boost:
        verdict = REJECTED  # no leverage at either scale: nothing scaled
    else:
        verdict = SUPPORTED if r >= min_ratio else (REJECTED if r < reject_below else WEAKENED)
    return Verdict("H003", verdict, f"best steering boost ratio large/max(small, {min_boost:g})", r, lo, hi,
                   f"supported if >= {min_ratio:g}, rejected if < {reject_below:g} or both boosts < {min_boost:g}, "
                   "else weakened", {"small": small_boost, "large": large_boost})


def h004(small_selectivity: float, large_selectivity: float, *, min_ratio: float, reject_below: float,
         min_selectivity: float = 1.0) -> Verdict:
    """Selectivity preserved: the small model must be selective first (best selectivity >=
    ``min_selectivity``: the skill drops more than the rest), else rejected (nothing to preserve; the
    former rule called two anti-selective models "preserved"). Then supported if the large model is
    selective too and keeps >= ``min_ratio`` of the small one's selectivity; rejected if it is not
    selective or keeps < ``reject_below``; weakened in between."""
    if reject_below > min_ratio:
        raise AtlasError(f"H004: reject_below ({reject_below}) must not exceed min_ratio ({min_ratio}) in the claims file")
    ev = {"small": small_selectivity, "large": large_selectivity}
    rule = (f"rejected if small < {min_selectivity:g}x (not selective) or large < {min_selectivity:g}x or ratio < "
            f"{reject_below:g}; supported if ratio >= {min_ratio:g}; else weakened")
    if small_selectivity < min_selectivity:
        r = _ratio(large_selectivity, small_selectivity) if small_selectivity > 0 else float("nan")
        return Verdict("H004", REJECTED, "best knockout selectivity ratio large/small", r, None, None, rule, ev)
    r = large_selectivity / small_selectivity
    if large_selectivity < min_selectivity or r < reject_below:
        verdict = REJECTED
    else:
        verdict = SUPPORTED if r >= min_ratio else WEAKENED
    return Verdict("H004", verdict, "best knockout selectivity ratio large/small", r, None, None, rule, ev)


def h005(small_fraction: float, large_fraction: float, *, max_fraction: float, tolerance: float) -> Verdict:
    """The transfer zone (layers recovering >= the zone threshold) starts at the same relative depth:
    supported if the final fractions of depth the two zones occupy differ by <= ``tolerance`` (H001's
    notion of "same relative depth") and both zones are localised (non-empty, <= ``max_fraction`` of
    depth); rejected otherwise. The former rule read the top three layers, which are the last three of
    any model whose recovery rises with depth (and the last layer recovers 1 by construction)."""
    diff = abs(large_fraction - small_fraction)
    local = all(0 < f <= max_fraction for f in (small_fraction, large_fraction))
    verdict = SUPPORTED if local and diff <= tolerance else REJECTED
    return Verdict("H005", verdict, "|transfer-zone final fraction of depth large - small|", diff, None, None,
                   f"supported if <= {tolerance:g} and both zones non-empty and <= {max_fraction:g} of depth, "
                   "else rejected", {"small_fraction": small_fraction, "large_fraction": large_fraction})


def h006(small_mlp_kl: float, large_mlp_kl: float, *, min_ratio: float, reject_below: float, lo=None, hi=None) -> Verdict:
    """Supported if the max MLP-ablation KL grows with the model (ratio >= ``min_ratio``); rejected if
    the ratio is < ``reject_below`` (weaker at scale); weakened in between."""
    return _ratio_rule("H006", "max MLP KL", small_mlp_kl, large_mlp_kl, min_ratio=min_ratio,
                       reject_below=reject_below, middle=WEAKENED, lo=lo, hi=hi)


def h007(small_best_overlap: float, large_best_overlap: float, *, threshold: float, min_gain: float,
         lo=None, hi=None) -> Verdict:
    """Redundancy *emerges at scale*: the best top-5 overlap among skip configurations must rise by
    >= ``min_gain`` from the small model to the large one, else rejected (the former rule read the
    large model alone: 91% on Coder-1.5B beside 90.2% on Coder-0.5B is no emergence). When it rises:
    supported if the large model's overlap is above ``threshold``, partially supported if not (the
    study: 0% -> 10%)."""
    gain = large_best_overlap - small_best_overlap
    verdict = REJECTED if gain < min_gain else (SUPPORTED if large_best_overlap > threshold else PARTIAL)
    return Verdict("H007", verdict, "gain in best top-5 overlap among skip configs, large - small", gain, lo, hi,
                   f"rejected if gain < {min_gain:g}; supported if the large overlap > {threshold:g}, else partially",
                   {"small": small_best_overlap, "large": large_best_overlap})


def h008(small_r: float, large_r: float, *, high: float, low: float, drop_tolerance: float, lo=None, hi=None,
         small_rho: float | None = None, large_rho: float | None = None) -> Verdict:
    """Adapter norm vs ablation effect (Pearson r, as the study): rejected if the large model's r < ``low``;
    weakened if r drops by more than ``drop_tolerance`` between scales; supported if >= ``high`` at
    both; partially supported otherwise. Spearman's rho, where given, is reported with the evidence
    (it does not enter the rule: the study's verdict is about r)."""
    if large_r < low:
        verdict = REJECTED
    elif small_r - large_r > drop_tolerance:
        verdict = WEAKENED
    elif small_r >= high and large_r >= high:
        verdict = SUPPORTED
    else:
        verdict = PARTIAL
    return Verdict("H008", verdict, "Pearson r (adapter norm vs effect), large", large_r, lo, hi,
                   f"rejected if large r < {low:g}; weakened if r drops > {drop_tolerance:g}; "
                   f"supported if both >= {high:g}; else partially supported",
                   {"small_r": small_r, "large_r": large_r, "drop": small_r - large_r,
                    **{k: v for k, v in (("small_rho", small_rho), ("large_rho", large_rho)) if v is not None}})


def _need(stats: Mapping[str, Stat], name: str, role: str) -> Stat:
    s = stats.get(name)
    if s is None or (s.value is None and not s.tie):  # a tie is measured: it has no top item
        raise AtlasError(f"statistic {name} of the {role} model is missing: run its experiment "
                         f"({', '.join(statistic_experiments(name))}) for that model")
    return s


def _th(thresholds: Mapping, hid: str, *keys: str) -> dict:
    missing = [k for k in keys if k not in thresholds]
    if missing:
        raise AtlasError(f"{hid}: the claims file's [thresholds.{hid}] lacks {', '.join(missing)}")
    return {k: thresholds[k] for k in keys}


def decide(hid: str, small: Mapping[str, Stat], large: Mapping[str, Stat], thresholds: Mapping) -> Verdict:
    """Apply hypothesis ``hid``'s rule to two models' statistics with the claims file's thresholds."""
    if hid == "H001":
        s, l = _need(small, "hub.top_layer_depth", "small"), _need(large, "hub.top_layer_depth", "large")
        v = h001(s.value, l.value, **_th(thresholds, hid, "tolerance"))
        return replace(v, evidence={**v.evidence, "small_layer": _need(small, "hub.top_layer", "small").value,
                                    "large_layer": _need(large, "hub.top_layer", "large").value})
    if hid == "H002":
        for role, st in (("small", small), ("large", large)):
            cov = st.get("heads.layer_coverage")
            if cov is not None and cov.value is not None and cov.value < 1:
                raise AtlasError(f"H002 is not measurable here: the {role} model's head ablation swept {cov.label} "
                                 "(the strongest head may sit in a skipped layer); run head_ablation at the full "
                                 "profile, which sweeps every layer")
    if hid in ("H002", "H003", "H006"):
        name = {"H002": "heads.max_kl", "H006": "mlp.max_kl",
                "H003": "steering." + str(thresholds.get("boost", "best_boost"))}[hid]
        s, l = _need(small, name, "small"), _need(large, name, "large")
        if hid == "H002":
            r = ratio_stat(l, s)
            return h002(s.value, l.value, **_th(thresholds, hid, "min_ratio"), lo=r.lo, hi=r.hi)
        if hid == "H003":
            th = _th(thresholds, hid, "min_ratio", "reject_below", "min_boost")
            floor = Stat(max(s.value, th["min_boost"]), None if s.lo is None else max(s.lo, th["min_boost"]),
                         None if s.hi is None else max(s.hi, th["min_boost"]))
            r = ratio_stat(l, floor)
            return h003(s.value, l.value, **th, lo=r.lo, hi=r.hi)
        r = ratio_stat(l, s)
        return h006(s.value, l.value, **_th(thresholds, hid, "min_ratio", "reject_below"), lo=r.lo, hi=r.hi)
    if hid == "H004":
        s, l = _need(small, "knockout.best_selectivity", "small"), _need(large, "knockout.best_selectivity", "large")
        return h004(s.value, l.value, **_th(thresholds, hid, "min_ratio", "reject_below", "min_selectivity"))
    if hid == "H005":
        name = "transfer.zone_final_fraction"  # the layers recovering >= the zone threshold
        sf, lf = _need(small, name, "small"), _need(large, name, "large")
        return h005(sf.value, lf.value, **_th(thresholds, hid, "max_fraction", "tolerance"))
    if hid == "H007":
        s = _need(small, "efficiency.best_top5_overlap", "small")
        l = _need(large, "efficiency.best_top5_overlap", "large")
        lo = hi = None
        if None not in (s.lo, s.hi, l.lo, l.hi):  # conservative: the gain's extremes over both intervals
            lo, hi = l.lo - s.hi, l.hi - s.lo
        return h007(s.value, l.value, **_th(thresholds, hid, "threshold", "min_gain"), lo=lo, hi=hi)
    if hid == "H008":
        s, l = _need(small, "adapter.pearson", "small"), _need(large, "adapter.pearson", "large")
        rho = {f"{role}_rho": st["adapter.spearman"].value for role, st in (("small", small), ("large", large))
               if "adapter.spearman" in st}
        return h008(s.value, l.value, **_th(thresholds, hid, "high", "low", "drop_tolerance"), lo=l.lo, hi=l.hi, **rho)
    raise AtlasError(f"unknown hypothesis {hid!r}; hypotheses are {', '.join(HYPOTHESES)}")


def check_verdict(name: str) -> str:
    """Normalise a verdict spelling (``PARTIALLY SUPPORTED`` -> ``partially supported``)."""
    v = " ".join(str(name).strip().lower().replace("_", " ").split())
    if v not in VERDICTS:
        raise AtlasError(f"unknown verdict {name!r}; verdicts are {', '.join(VERDICTS)}")
    return v
