"""Decision rules and finding statistics: measured numbers in, verdicts and named statistics out.

Two layers, both pure (no model, no files), both driven by the declarations in :mod:`atlas_core.spec`:

- *Finding statistics* of one model: ``model_statistics(results, n_layers)`` loads each experiment's
  stored result as its typed result (:func:`atlas_core.experiments.schema.load_result`) and applies
  the experiment's ``statistics``, giving named ``Stat`` values such as ``hub.top_layer_kl`` or
  ``steering.best_boost``, each with its bootstrap interval where the experiment measured one and a
  small series for plots. Claims, comparisons and reports all read these names.
- *Decision rules*: each hypothesis's ``rule`` (``atlas_core/hypotheses/h00N.py``) on a small and a
  large model's statistics, with every threshold passed in (claims files hold them), returning a
  ``Verdict`` in {supported, partially supported, weakened, rejected, inconclusive} with its evidence.
  Rules decide on the decisive statistic's interval (:func:`atlas_core.stat.banded`): a verdict holds
  only when the whole interval lies on its side of the thresholds, else it is ``inconclusive``.
  ``decide(hid, small, large, thresholds)`` checks the thresholds and runs the rule.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from atlas_core import AtlasError
from atlas_core.spec import experiments, hypothesis, statistic_experiments
from atlas_core.stat import (  # noqa: F401  (the names rules, claims and reports import from here)
    INCONCLUSIVE,
    PARTIAL,
    REJECTED,
    SUPPORTED,
    VERDICTS,
    WEAKENED,
    Stat,
    banded,
    bounds,
    Verdict,
    final_fraction,
    ratio,
    ratio_stat,
    relative_depth,
)


def model_statistics(results: Mapping[str, Any], n_layers: int) -> dict[str, Stat]:
    """Every finding statistic of one model from its stored results (experiment name -> result, typed
    or as stored JSON); experiments that are absent contribute nothing."""
    from atlas_core.experiments.schema import load_result

    typed = {name: load_result(name, r) for name, r in results.items() if r is not None}
    out: dict[str, Stat] = {}
    for name, spec in experiments().items():
        if name in typed and spec.statistics is not None:
            out.update(spec.statistics(typed[name], n_layers, typed))
    return out


def need(stats: Mapping[str, Stat], name: str, role: str) -> Stat:
    """Statistic ``name`` of the ``role`` model, or an error saying which experiment to run."""
    s = stats.get(name)
    if s is None or (s.value is None and not s.tie):  # a tie is measured: it has no top item
        raise AtlasError(
            f"statistic {name} of the {role} model is missing: run its experiment "
            f"({', '.join(statistic_experiments(name))}) for that model"
        )
    return s


def ratio_rule(
    hid: str,
    what: str,
    small: float,
    large: float,
    *,
    min_ratio: float,
    reject_below: float,
    middle: str,
    lo=None,
    hi=None,
    evidence=None,
) -> Verdict:
    """large / small on its interval (:func:`banded`, a scaling rule: support needs the whole interval
    >= ``min_ratio`` and above 1), rejected if below ``reject_below`` (or undefined), ``middle`` wholly
    between, else inconclusive; a small value <= 0 has nothing to scale from (the ratio is +-inf by the
    large one's sign)."""
    if reject_below > min_ratio:
        raise AtlasError(
            f"{hid}: reject_below ({reject_below}) must not exceed min_ratio ({min_ratio}) in the claims file"
        )
    r = ratio(large, small)
    if small is not None and small <= 0:  # nothing to scale or preserve at the small scale
        r = math.inf if large is not None and large > 0 else -math.inf
    if math.isinf(r):
        lo = hi = None
    verdict = banded(r, lo, hi, support_at=min_ratio, reject_below=reject_below, middle=middle, scaling=True)
    sup = f">= {min_ratio:g}" + (" and above 1" if min_ratio <= 1 else "")
    rej = "<= 1" if reject_below >= 1 or middle == PARTIAL else f"< {reject_below:g}"
    rule = (
        f"on the interval: supported if it lies {sup}, rejected if {rej}, {middle} if wholly between, else inconclusive"
    )
    return Verdict(
        hid, verdict, f"{what} ratio large/small", r, lo, hi, rule, {"small": small, "large": large, **(evidence or {})}
    )


def decide(hid: str, small: Mapping[str, Stat], large: Mapping[str, Stat], thresholds: Mapping) -> Verdict:
    """Apply hypothesis ``hid``'s rule to two models' statistics with the claims file's thresholds."""
    spec = hypothesis(hid)
    missing = [k for k in spec.required if k not in thresholds]
    if missing:
        raise AtlasError(f"{hid}: the claims file's [thresholds.{hid}] lacks {', '.join(missing)}")
    for name in spec.statistics:
        need(small, name, "small"), need(large, name, "large")
    return spec.rule(small, large, {**{k: spec.thresholds[k] for k in spec.optional}, **thresholds})


def check_verdict(name: str) -> str:
    """Normalise a verdict spelling (``PARTIALLY SUPPORTED`` -> ``partially supported``)."""
    v = " ".join(str(name).strip().lower().replace("_", " ").split())
    if v not in VERDICTS:
        raise AtlasError(f"unknown verdict {name!r}; verdicts are {', '.join(VERDICTS)}")
    return v
