"""Claims files: what a model (or a pair of models) is expected to show, checked against stored runs.

A claims file (TOML, shipped under ``atlas_core/data/claims/``) holds::

    [meta]
    label = "..."                 # what the claims are
    source = "published"          # or "measured" (written by ``atlas claims write`` from runs)
    profile = "ci"                # the profile the claims were measured at ("any": not tied to one)
    models = ["SMALL", "LARGE"]   # model names (registered names, hub ids or folder names), small first

    [thresholds.H001]             # the decision rules' thresholds (atlas_core.verdicts)
    tolerance = 0.1

    [[claim]]
    id = "..."                    # unique in the file
    statistic = "hub.ranking"     # a finding statistic (atlas_core.verdicts) or a hypothesis id "H003"
    kind = "rank"                 # value | at_least | at_most | rank | verdict
    model = "LARGE"               # finding claims: the model; hypothesis claims use meta.models
    layer = 26                    # rank: the layer (or family = "json_schema" for lora.ranking) ...
    max_rank = 3                  # ... must rank within the top 3
    expected = 13.70              # value: expected +- tolerance
    tolerance = 2.0
    threshold = 0.5               # at_least / at_most
    expected_verdict = "rejected" # verdict

Every claim must be able to fail: ``load_claims`` refuses, naming it, a claim that
``atlas_core.claim_hygiene`` finds true by construction or accepting both sides of a decision threshold or
its statistic's whole plausible range; ``write_claims`` tightens or drops such claims and says which.

``evaluate`` checks one claim against the statistics of the runs; ``write_claims`` writes a claims
file from stored runs (tolerances from their bootstrap intervals); ``compare_runs`` compares every
finding statistic of two runs (regression across model versions) and ``format_comparison`` prints it.
"""

from __future__ import annotations

import math
import time
from fnmatch import fnmatchcase
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from atlas_core import AtlasError
from atlas_core.claim_hygiene import refusal
from atlas_core.data import CLAIMS_DIR
from atlas_core.profiles import PROFILES
from atlas_core.results import RunStore, atomic_write_text
from atlas_core.verdicts import (
    CLAIM_GROUPS, DEFAULT_THRESHOLDS, FINDINGS, HYPOTHESES, Stat, check_verdict, decide, model_statistics,
    statistic_experiments,
)

KINDS = ("value", "at_least", "at_most", "rank", "verdict")
SOURCES = ("published", "measured")
REQUIRED_THRESHOLDS = {
    "H001": ("tolerance",), "H002": ("min_ratio",), "H003": ("min_ratio", "reject_below", "min_boost"),
    "H004": ("min_ratio", "reject_below", "min_selectivity"), "H005": ("max_fraction", "tolerance"),
    "H006": ("min_ratio", "reject_below"), "H007": ("threshold", "min_gain"), "H008": ("high", "low", "drop_tolerance"),
}


# ----------------------------------------------------------------------------------------------
# claims and claims files


@dataclass(frozen=True)
class Claim:
    """One checkable statement about a model (finding claims) or a model pair (hypothesis claims)."""

    id: str
    statistic: str
    kind: str
    models: tuple[str, ...]  # one model, or (small, large) for hypothesis claims
    source: str
    expected: float | None = None
    tolerance: float | None = None
    threshold: float | None = None
    layer: int | None = None
    max_rank: int | None = None
    family: str | None = None  # rank claims on lora.ranking name a family instead of a layer
    expected_verdict: str | None = None
    description: str = ""

    @property
    def hypothesis(self) -> str | None:
        head = self.statistic.split(".")[0]
        return head if head in HYPOTHESES else None

    @property
    def group(self) -> str:
        """The pytest marker that selects this claim: ``h003``, ``finding_hub``, ... (or the group)."""
        if self.hypothesis:
            return self.hypothesis.lower()
        head = self.statistic.split(".")[0]
        return f"finding_{head}" if head in CLAIM_GROUPS else head

    @property
    def ranked(self) -> str:
        """What a rank claim ranks: ``layer 26`` or ``family json_schema``."""
        return f"family {self.family}" if self.family is not None else f"layer {self.layer}"

    @property
    def experiments(self) -> tuple[str, ...]:
        return statistic_experiments(self.statistic)

    def expectation(self) -> str:
        """The threshold in words, e.g. ``13.7 +- 2``, ``rank <= 3``, ``>= 0.5``, ``verdict rejected``."""
        if self.kind == "value":
            return f"{self.expected:.4g} ± {self.tolerance:.3g}"
        if self.kind == "at_least":
            return f">= {self.threshold:.4g}"
        if self.kind == "at_most":
            return f"<= {self.threshold:.4g}"
        if self.kind == "rank":
            return f"{self.ranked} ranks <= {self.max_rank}"
        return f"verdict {self.expected_verdict}"


@dataclass
class ClaimsFile:
    path: Path
    meta: dict
    thresholds: dict[str, dict]
    claims: list[Claim]

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def profile(self) -> str:
        return str(self.meta.get("profile", "any"))

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(self.meta.get("models", ()))


def _bad(path, msg: str) -> AtlasError:
    return AtlasError(f"claims file {path}: {msg}")


def _num(path, cid, entry, key, required=True) -> float | None:
    v = entry.get(key)
    if v is None:
        if required:
            raise _bad(path, f"claim {cid!r} ({entry.get('kind')}) needs a number {key!r}")
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _bad(path, f"claim {cid!r}: {key} must be a number, got {v!r}")
    return float(v)


def parse_claim(entry: Mapping, meta: Mapping, path: Path | str = "<claims>") -> Claim:
    """One ``[[claim]]`` table into a validated ``Claim`` (errors name the file and the claim)."""
    cid = entry.get("id")
    if not cid or not isinstance(cid, str):
        raise _bad(path, f"a claim lacks a string 'id': {dict(entry)}")
    stat = entry.get("statistic")
    if not stat or not isinstance(stat, str):
        raise _bad(path, f"claim {cid!r} lacks 'statistic'")
    try:
        statistic_experiments(stat)
    except AtlasError as exc:
        raise _bad(path, f"claim {cid!r}: {exc}") from None
    kind = entry.get("kind", "verdict" if stat in HYPOTHESES else "value")
    if kind not in KINDS:
        raise _bad(path, f"claim {cid!r}: unknown kind {kind!r}; kinds are {', '.join(KINDS)}")
    source = entry.get("source", meta.get("source", "measured"))
    if source not in SOURCES:
        raise _bad(path, f"claim {cid!r}: source must be one of {', '.join(SOURCES)}, got {source!r}")
    hyp = stat.split(".")[0] in HYPOTHESES
    if hyp:
        models = tuple(entry.get("models", meta.get("models", ())))
        if len(models) != 2:
            raise _bad(path, f"claim {cid!r} is about hypothesis {stat}: it needs two models (small, large) "
                             "in 'models' or in [meta] models")
    else:
        model = entry.get("model")
        if not model:
            raise _bad(path, f"claim {cid!r}: a finding claim names its 'model'")
        models = (str(model),)
    if kind == "verdict" and not hyp:
        raise _bad(path, f"claim {cid!r}: verdict claims are about a hypothesis (statistic H001..H008)")
    if kind == "rank" and hyp:
        raise _bad(path, f"claim {cid!r}: rank claims are about a ranking statistic (hub.ranking, mlp.ranking)")
    c = Claim(id=cid, statistic=stat, kind=kind, models=models, source=source,
              description=str(entry.get("description", "")))
    if kind == "value":
        c = _replace(c, expected=_num(path, cid, entry, "expected"), tolerance=_num(path, cid, entry, "tolerance"))
        if c.tolerance < 0:
            raise _bad(path, f"claim {cid!r}: tolerance must be >= 0")
    elif kind in ("at_least", "at_most"):
        c = _replace(c, threshold=_num(path, cid, entry, "threshold"))
    elif kind == "rank":
        if not stat.endswith(".ranking"):
            raise _bad(path, f"claim {cid!r}: rank claims read a '.ranking' statistic, not {stat!r}")
        layer, family, max_rank = entry.get("layer"), entry.get("family"), entry.get("max_rank")
        if stat == "lora.ranking":
            if not isinstance(family, str) or not isinstance(max_rank, int) or max_rank < 1:
                raise _bad(path, f"claim {cid!r}: rank claims on lora.ranking need a string 'family' and 'max_rank' >= 1")
        elif not isinstance(layer, int) or not isinstance(max_rank, int) or max_rank < 1:
            raise _bad(path, f"claim {cid!r}: rank claims need an integer 'layer' and 'max_rank' >= 1")
        c = _replace(c, layer=layer if stat != "lora.ranking" else None, family=family if stat == "lora.ranking" else None,
                     max_rank=max_rank)
    else:
        ev = entry.get("expected_verdict")
        if ev is None:
            raise _bad(path, f"claim {cid!r}: verdict claims need 'expected_verdict'")
        try:
            c = _replace(c, expected_verdict=check_verdict(ev))
        except AtlasError as exc:
            raise _bad(path, f"claim {cid!r}: {exc}") from None
    return c


def _replace(c: Claim, **kw) -> Claim:
    from dataclasses import replace

    return replace(c, **kw)


def load_claims(path: str | Path) -> ClaimsFile:
    """Read and validate a claims file; every problem is an AtlasError naming the file and the fix."""
    path = Path(path)
    if not path.is_file():
        raise AtlasError(f"claims file {path} does not exist; claims files live in {CLAIMS_DIR}")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise _bad(path, f"not valid TOML ({exc})") from None
    meta = dict(data.get("meta", {}))
    models = meta.get("models", [])
    if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        raise _bad(path, "[meta] models must be a list of model names (small first)")
    thresholds = {k: dict(v) for k, v in data.get("thresholds", {}).items()}
    for hid in thresholds:
        if hid not in HYPOTHESES:
            raise _bad(path, f"[thresholds.{hid}]: unknown hypothesis; hypotheses are {', '.join(HYPOTHESES)}")
    claims = [parse_claim(e, meta, path) for e in data.get("claim", [])]
    profile = PROFILES.get(str(meta.get("profile", "any")))
    sampled = profile is not None and profile.head_layers is not None
    for c in claims:
        why = refusal(c, thresholds, sampled)
        if why:
            raise _bad(path, f"claim {c.id!r} cannot fail: {why}")
    seen: set[str] = set()
    for c in claims:
        if c.id in seen:
            raise _bad(path, f"duplicate claim id {c.id!r}")
        seen.add(c.id)
        if c.hypothesis:
            need = REQUIRED_THRESHOLDS[c.hypothesis]
            have = thresholds.get(c.hypothesis, {})
            missing = [k for k in need if k not in have]
            if missing:
                raise _bad(path, f"claim {c.id!r} needs [thresholds.{c.hypothesis}] with {', '.join(missing)}")
    return ClaimsFile(path, meta, thresholds, claims)


def default_claims_files(directory: str | Path = CLAIMS_DIR) -> list[Path]:
    return sorted(Path(directory).glob("*.toml"))


def same_model(claimed: str, actual: str) -> bool:
    """A claim about ``Qwen/Qwen2.5-1.5B`` applies to that hub id and to a folder named Qwen2.5-1.5B."""
    def base(s: str) -> str:
        return Path(str(s).rstrip("/")).name.lower()

    return claimed == actual or base(claimed) == base(actual)


# ----------------------------------------------------------------------------------------------
# evaluation


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
        return {"claim": self.claim.id, "models": list(self.models), "statistic": self.statistic,
                "value": _finite(self.value), "lo": _finite(self.lo), "hi": _finite(self.hi),
                "threshold": self.threshold, "verdict": self.verdict, "expected_verdict": self.expected_verdict,
                "series": self.series}


def _finite(x):
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _fmt(value, lo=None, hi=None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a (not measured)"
    s = f"{value:.4g}"
    if lo is not None and hi is not None:
        s += f" [{lo:.4g}, {hi:.4g}]"
    return s


def evaluate(claim: Claim, stats: Sequence[Mapping[str, Stat]], models: Sequence[str],
             thresholds: Mapping[str, Mapping] | None = None) -> Evaluation:
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
        measured = _fmt(v.value, v.lo, v.hi)
        ev = {"verdict": v.verdict, "evidence": v.evidence, "rule": v.rule}
        if claim.kind == "verdict":
            ok = v.verdict == claim.expected_verdict
            msg = (f"claim {claim.id} ({claim.source}) on {who}: {claim.hypothesis} verdict {v.verdict.upper()}, "
                   f"expected {claim.expected_verdict.upper()}; {v.statistic} = {measured} "
                   f"(rule: {v.rule}; evidence {_evidence(v.evidence)})")
            return Evaluation(claim, models, ok, v.statistic, v.value, v.lo, v.hi, claim.expectation(),
                              msg + ("" if ok else " -> FAIL"), v.verdict, claim.expected_verdict, None, ev)
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
        if claim.kind == "rank":
            ranking = list(s.ranking or ()) if s is not None else []
            target = claim.family if claim.family is not None else claim.layer
            rank = ranking.index(target) + 1 if target in ranking else None
            ok = rank is not None and rank <= claim.max_rank
            top = ", ".join(str(x) if isinstance(x, str) else f"L{x}" for x in ranking[: max(claim.max_rank, 3)])
            what = "families" if claim.family is not None else "layers"
            got = (f"rank {rank} of {len(ranking)}" if rank is not None else
                   (f"{claim.ranked} not among the {len(ranking)} {what} measured" if ranking else
                    f"not ranked: {label}" if s is not None and s.tie else "not measured"))
            msg = (f"claim {claim.id} ({claim.source}) on {who}: {claim.statistic}: {claim.ranked} {got} "
                   f"(top: {top or 'n/a'}); expected rank <= {claim.max_rank}" + ("" if ok else " -> FAIL"))
            return Evaluation(claim, models, ok, f"rank of {claim.ranked} by {claim.statistic}",
                              None if rank is None else float(rank), None, None, claim.expectation(), msg,
                              None, None, series, {})
    ok = _check(claim, value)
    tie = claim.hypothesis is None and s is not None and s.tie
    measured = f"none: {label}" if tie else _fmt(value, lo, hi) + (f" ({label})" if label else "")
    msg = (f"claim {claim.id} ({claim.source}) on {who}: {name} measured {measured}; expected "
           f"{claim.expectation()}" + ("" if ok else " -> FAIL"))
    return Evaluation(claim, models, ok, name, value, lo, hi, claim.expectation(), msg, verdict, None, series, {})


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


# ----------------------------------------------------------------------------------------------
# runs


@dataclass
class Run:
    """A stored run folder: its model, profile, base-seed results and finding statistics."""

    root: Path
    model: str
    info: dict
    profile: str
    results: dict[str, dict]
    provenance: dict[str, dict]
    stats: dict[str, Stat]


def load_run(run_dir: str | Path) -> Run:
    """Read a run folder written by ``atlas run`` (base-seed records only)."""
    store = RunStore(run_dir)
    if not store.root.is_dir():
        raise AtlasError(f"run folder {store.root} does not exist; make one with `atlas run --out {store.root}`")
    manifest = store.manifest()
    records = {k: r for k, r in store.records().items() if k == r.experiment}
    if not records:
        raise AtlasError(f"run folder {store.root} holds no experiment results; run `atlas run --out {store.root}`")
    info = manifest.get("model") or next(iter(records.values())).provenance.get("model", {})
    if "n_layers" not in info:
        raise AtlasError(f"run folder {store.root}: its manifest lacks the model's facts (n_layers)")
    profile = (manifest.get("profile") or {}).get("name") or next(iter(records.values())).provenance.get("profile", "?")
    results = {k: r.result for k, r in records.items()}
    prov = {k: {"config_hash": r.config_hash, **r.provenance} for k, r in records.items()}
    return Run(store.root, info.get("name", store.root.name), info, profile, results, prov,
               model_statistics(results, int(info["n_layers"])))


def _tolerance(s: Stat, k: float, floor: float, rel: float) -> float:
    hw = s.half_width or 0.0
    return max(k * hw, floor, rel * abs(s.value or 0.0))


# Statistics ``write_claims`` turns into claims, per claim group (per-family ones expand to every family).
# Not here: transfer.final_recovery and the top-3 final fraction (true by construction, see claim_hygiene).
CLAIM_STATISTICS: dict[str, tuple[str, ...]] = {
    "hub": ("hub.top_layer_kl", "hub.family_kl.*"),
    "heads": ("heads.max_kl", "heads.max_layer_depth", "heads.family_max_kl.*"),
    "steering": ("steering.best_boost", "steering.study_layer_best_boost"),
    "knockout": ("knockout.best_selectivity", "knockout.skill_drop", "knockout.nonskill_drop"),
    "transfer": ("transfer.zone_final_fraction",),
    "mlp": ("mlp.max_kl", "mlp.share_of_top_layer"),
    "lora": ("lora.kl.*",),
    "efficiency": ("efficiency.best_exit_argmax", "efficiency.exit.*.argmax_match"),
}
RANKED = {"hub": ("hub.ranking", "layer ablation"), "mlp": ("mlp.ranking", "MLP ablation"),
          "lora": ("lora.ranking", "base -> trained KL")}


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

    def add(self, entry: dict, tight: float | None = None) -> None:
        claim = parse_claim(entry, self.meta)
        why = refusal(claim, self.thresholds, self.sampled)
        if why and claim.kind == "value" and tight is not None and 0 < tight < claim.tolerance:
            looser = claim.tolerance
            entry = {**entry, "tolerance": float(_n(tight))}
            claim = parse_claim(entry, self.meta)
            if refusal(claim, self.thresholds, self.sampled) is None:
                self.counts["tightened"] += 1
                self.notes.append(f"tightened {claim.id}: ± {looser:.4g} -> ± {claim.tolerance:.4g} "
                                  f"({_first_clause(why)})")
                why = None
        if why:
            self.counts["dropped"] += 1
            self.notes.append(f"dropped {claim.id}: {why}")
            return
        self.counts["kept"] += 1
        self.body += ["[[claim]]"] + [f"{key} = {_v(val)}" for key, val in entry.items()] + [""]


def _first_clause(why: str) -> str:
    return why.split(";")[0]


def write_claims(run_dirs: Sequence[str | Path], out: str | Path, label: str | None = None, *,
                 k: float = 2.0, floor: float = 0.01, rel: float = 0.1, rank: int = 3) -> Path:
    """Write a claims file from one run (finding claims) or two runs of a pair, small then large
    (finding claims for both plus a verdict and a statistic claim per hypothesis). Tolerance of a
    value claim: ``max(k * half-width of its bootstrap interval, floor, rel * |value|)``, tightened to
    ``k * half-width`` or dropped where the hygiene rules say it cannot fail (the file lists each);
    observed verdicts become the expected verdicts; provenance records each run's weights, profile and date."""
    runs = [load_run(d) for d in run_dirs]
    if not 1 <= len(runs) <= 2:
        raise AtlasError(f"claims write takes one run or a pair (small then large), got {len(runs)}")
    profiles = {r.profile for r in runs}
    if len(profiles) != 1:
        raise AtlasError(f"the runs were made at different profiles ({', '.join(sorted(profiles))}); "
                         "write claims from runs of one profile")
    profile = profiles.pop()
    models = [r.model for r in runs]
    if len(set(models)) != len(models):
        raise AtlasError(f"both runs are of {models[0]}: a pair is two different models (small then large)")
    thresholds = DEFAULT_THRESHOLDS
    prof = PROFILES.get(profile)
    w = _Writer(thresholds, prof is not None and prof.head_layers is not None,
                {"source": "measured", "profile": profile, "models": models})
    for r in runs:
        for group, names in CLAIM_STATISTICS.items():
            for pattern in names:
                for name in _expand(pattern, r.stats):
                    s = r.stats[name]
                    if s.value is None or not math.isfinite(s.value):
                        continue
                    w.add({"id": f"{r.model}:{name}", "model": r.model, "statistic": name, "kind": "value",
                           "expected": float(_n(s.value)), "tolerance": float(_n(_tolerance(s, k, floor, rel))),
                           "description": f"{name} = {s.text()} on {r.model}"}, k * (s.half_width or 0.0))
            if group in RANKED:
                stat, what = RANKED[group]
                st = r.stats.get(stat)
                if st is None or st.tie or not st.ranking:
                    continue
                top, key = st.ranking[0], "family" if group == "lora" else "layer"
                name = top if group == "lora" else f"L{top}"
                w.add({"id": f"{r.model}:{group}.rank.{name}", "model": r.model, "statistic": stat, "kind": "rank",
                       key: top, "max_rank": min(rank, len(st.ranking) - 1),
                       "description": f"{name} ranks top-{min(rank, len(st.ranking) - 1)} by {what} on {r.model}"})
    if len(runs) == 2:
        small, large = runs
        for hid in HYPOTHESES:
            try:
                v = decide(hid, small.stats, large.stats, thresholds[hid])
            except AtlasError as exc:
                w.notes.append(f"no {hid} claims: {exc}")
                continue  # that experiment is not in both runs, or the profile cannot measure it
            w.add({"id": hid, "statistic": hid, "kind": "verdict", "expected_verdict": v.verdict,
                   "description": f"{HYPOTHESES[hid]}: {v.verdict} ({v.statistic} {_fmt(v.value, v.lo, v.hi)})"})
            if v.value is not None and math.isfinite(v.value):
                st = Stat(v.value, v.lo, v.hi)
                w.add({"id": f"{hid}.statistic", "statistic": hid, "kind": "value", "expected": float(_n(v.value)),
                       "tolerance": float(_n(_tolerance(st, k, floor, rel))),
                       "description": f"{v.statistic} = {_fmt(v.value, v.lo, v.hi)}"}, k * (st.half_width or 0.0))
    lines = ["# Generated by `atlas claims write` from the suite's own runs; regenerate, do not hand-edit.",
             f"# Claim hygiene (atlas_core.claim_hygiene): {w.counts['kept']} claims kept "
             f"({w.counts['tightened']} tightened to {k:g} x the bootstrap half-width), {w.counts['dropped']} dropped:"]
    lines += [f"#   {n}" for n in w.notes]
    lines += ["[meta]", f"label = {_q(label or ' vs '.join(models) + f' ({profile} profile)')}",
              'source = "measured"', f"profile = {_q(profile)}", f"models = {_list(models)}",
              f"generated = {_q(time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()))}",
              f"tolerance_rule = {_q(f'max({k:g} * bootstrap half-width, {floor:g}, {rel:g} * |value|)')}", ""]
    for r in runs:
        versions = next(iter(r.provenance.values())).get("versions", {})
        lines += [f"[meta.provenance.{_q(r.model)}]", f"run = {_q(str(r.root))}",
                  f"weights_sha256 = {_q(r.info.get('weights_sha256', ''))}", f"profile = {_q(r.profile)}",
                  f"dtype = {_q(r.info.get('dtype', ''))}", f"device = {_q(r.info.get('device', ''))}",
                  f"torch = {_q(versions.get('torch', ''))}", f"transformers = {_q(versions.get('transformers', ''))}",
                  "experiments = {" + ", ".join(f"{e} = {_q(p['config_hash'])}" for e, p in sorted(r.provenance.items()))
                  + "}", ""]
    for hid, th in thresholds.items():
        lines += [f"[thresholds.{hid}]"] + [f"{key} = {_v(val)}" for key, val in th.items()] + [""]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, "\n".join(lines + w.body))
    load_claims(out)  # what was written must read back
    return out


def _expand(pattern: str, stats: Mapping[str, Stat]) -> list[str]:
    return sorted(n for n in stats if fnmatchcase(n, pattern))


def _q(s: str) -> str:
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") + '"'


def _n(x: float) -> str:
    return repr(float(f"{float(x):.6g}"))


def _v(x) -> str:
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, (int, float)):
        return repr(x)
    return _q(x)


def _list(xs) -> str:
    return "[" + ", ".join(_q(x) for x in xs) + "]"


# ----------------------------------------------------------------------------------------------
# comparison of two runs (regression across model versions)


@dataclass
class ComparisonRow:
    """One finding statistic of two runs; ``drifted`` when they differ by more than ``tolerance``."""

    statistic: str
    group: str
    a: Stat | None
    b: Stat | None
    delta: float | None
    tolerance: float | None
    drifted: bool
    model_a: str = ""
    model_b: str = ""
    note: str = ""

    @property
    def finding(self) -> str | None:
        return self.group if self.group in FINDINGS else None

    def message(self) -> str:
        a = self.a.text() if self.a else "absent"
        b = self.b.text() if self.b else "absent"
        state = "drifted" if self.drifted else "within tolerance"
        tol = "" if self.tolerance is None else (" (layer/head index: must match)" if self.a and self.a.kind == "index"
                                                 else f" (|delta| {abs(self.delta or 0):.4g}, tolerance {self.tolerance:.4g})")
        return f"{self.statistic} {state}: baseline {self.model_a} {a} vs candidate {self.model_b} {b}{tol}"


def compare_stats(a: Mapping[str, Stat], b: Mapping[str, Stat], *, model_a: str = "A", model_b: str = "B",
                  k: float = 2.0, floor: float = 1e-3, rel: float = 0.05) -> list[ComparisonRow]:
    """Every statistic of either side. Layer/head indices must match exactly; a value drifts when
    ``|a - b| > max(k * sqrt(ha^2 + hb^2), floor, rel * max(|a|, |b|))`` (h: interval half-widths)."""
    rows = []
    order = {g: i for i, g in enumerate(("clean",) + FINDINGS + ("lora", "adapter", "efficiency"))}
    names = sorted(set(a) | set(b), key=lambda n: (order.get(n.split(".")[0], 99), n))
    for name in names:
        sa, sb = a.get(name), b.get(name)
        if (sa or sb).kind == "ranking":
            continue  # the top layer is compared as an index; the full order is too strict to compare
        group = name.split(".")[0]
        if sa is None or sb is None:
            rows.append(ComparisonRow(name, group, sa, sb, None, None, False, model_a, model_b,
                                      "only in " + ("A" if sb is None else "B")))
            continue
        va, vb = sa.value, sb.value
        if va is None or vb is None or not (math.isfinite(va) and math.isfinite(vb)):
            same = (va is None and vb is None) or (va is not None and vb is not None and
                                                   (va == vb or (math.isnan(va) and math.isnan(vb))))
            note = "tie" if sa.tie or sb.tie else "not finite"
            rows.append(ComparisonRow(name, group, sa, sb, None, None, not same, model_a, model_b, note))
            continue
        delta = vb - va
        if sa.kind == "index":
            tol = 0.0
        else:
            hw = math.sqrt((sa.half_width or 0.0) ** 2 + (sb.half_width or 0.0) ** 2)
            tol = max(k * hw, floor, rel * max(abs(va), abs(vb)))
        rows.append(ComparisonRow(name, group, sa, sb, delta, tol, abs(delta) > tol, model_a, model_b))
    return rows


def compare_runs(run_a: str | Path, run_b: str | Path, **kw) -> list[ComparisonRow]:
    """Compare every finding statistic of two stored runs (A: the baseline, B: the candidate)."""
    ra, rb = load_run(run_a), load_run(run_b)
    return compare_stats(ra.stats, rb.stats, model_a=ra.model, model_b=rb.model, **kw)


def format_comparison(rows: Sequence[ComparisonRow]) -> str:
    """A text table: statistic, A, B, delta, tolerance, status; then a one-line summary."""
    head = ("statistic", "A", "B", "delta", "tolerance", "status")
    table = [head]
    for r in rows:
        status = "DRIFT" if r.drifted else (r.note or "ok")
        table.append((r.statistic, r.a.text() if r.a else "-", r.b.text() if r.b else "-",
                      "-" if r.delta is None else f"{r.delta:+.4g}",
                      "-" if r.tolerance is None else ("exact" if r.a and r.a.kind == "index" else f"{r.tolerance:.4g}"),
                      status))
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    out = []
    if rows:
        out.append(f"A: {rows[0].model_a}    B: {rows[0].model_b}")
    for i, row in enumerate(table):
        out.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    drifted = [r.statistic for r in rows if r.drifted]
    out.append(f"{len(drifted)} of {len(rows)} statistics drifted" + (f": {', '.join(drifted)}" if drifted else ""))
    return "\n".join(out)
