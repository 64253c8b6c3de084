"""``atlas claims write``: a claims file from stored runs, each claim checked by the hygiene rules as it is
written (tightened to its bootstrap interval or dropped where it could not fail; the header lists which). Each
claim's bound comes from :mod:`atlas_core.claims.bounds`."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Mapping, Sequence

from atlas_core import AtlasError
from atlas_core.claim_hygiene import refusal
from atlas_core.claims.bounds import (
    RERUN_MARGIN,
    STABLE_K,
    STABLE_N,
    layer_value_claims,
    six_digits,
    value_tolerance,
    where_claims,
)
from atlas_core.claims.evaluation import format_estimate
from atlas_core.claims.files import load_claims, parse_claim
from atlas_core.profiles import PROFILES
from atlas_core.results import atomic_write_text
from atlas_core.runs import load_run
from atlas_core.spec import declaration, default_thresholds, experiments, hypotheses
from atlas_core.verdicts import Stat, decide


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
            entry = {**entry, "tolerance": float(six_digits(tight))}
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
                            "expected": float(six_digits(s.value)),
                            "tolerance": float(six_digits(value_tolerance(s, k, floor, rel, name))),
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
                        "expected": float(six_digits(v.value)),
                        "tolerance": float(six_digits(value_tolerance(st, k, floor, rel))),
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


def _expand(pattern: str, stats: Mapping[str, Stat]) -> list[str]:
    return sorted(n for n in stats if fnmatchcase(n, pattern))


def _q(s: str) -> str:
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") + '"'


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
