"""``atlas claims audit``: feed a claims file the wrong evidence and count the claims that still pass.

A claim is worth keeping when it tells its model from another. The audit evaluates every claim of a file
on evidence made from stored runs that is wrong by construction:

- ``swapped``: the pair's two models exchanged (a finding claim of one read on the other; a hypothesis
  claim on (large, small));
- ``substituted <model>``: another stored model of the same profile in place of the claimed one (in each
  role, for hypothesis claims);
- ``same model twice``: the small model as both small and large, and the large one likewise (hypothesis
  claims only);
- ``reversed`` and ``shuffled seed N``: the claimed model's results with every per-layer array reordered,
  each experiment's derived fields (rankings, top layers, zones) recomputed from the arrays by the
  ``relayer`` its spec declares, never trusted from the record.

It reports, per claim, the wrong inputs under which it fails, and the pass rate per kind of wrong input
(for swaps also over the claims on absolute quantities alone: a claim in relative depth may hold on a model
of another depth). A claim that passes under every wrong input fails the audit unless the claim is declared
an ``invariant`` (a property expected of any healthy model, with its reason; listed apart), and so does a
claim in relative depth that passes every reordering of the layers.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from atlas_core import AtlasError
from atlas_core.claims.evaluation import evaluate
from atlas_core.claims.files import Claim, ClaimsFile, load_claims, same_model
from atlas_core.runs import StoredRun, load_run
from atlas_core.spec import experiments
from atlas_core.verdicts import Stat, model_statistics

KINDS = ("swapped", "substituted", "same model twice", "reversed", "shuffled")


@dataclass
class ClaimAudit:
    """One claim: whether it passes its own evidence, and its outcome under each wrong input."""

    claim: Claim
    right: bool | None  # passes on the right evidence (None: no evidence for it)
    outcomes: dict[str, bool] = field(default_factory=dict)  # wrong input -> passed

    @property
    def finding(self) -> bool:
        return self.claim.hypothesis is None

    @property
    def fails_under(self) -> list[str]:
        return [k for k, ok in self.outcomes.items() if not ok]

    @property
    def blind(self) -> bool:
        """It passes under every wrong input it was fed (and it was fed some)."""
        return bool(self.outcomes) and all(self.outcomes.values())

    @property
    def relative(self) -> bool:
        """Stated in relative depth (the top's depth as a fraction of the model's): it may hold on a model of
        another depth, so passing a swap is allowed, but it must fail when the layers are reordered."""
        return self.claim.kind == "location" and self.claim.depth is not None

    @property
    def order_blind(self) -> bool:
        """A relative-depth claim that passes every reordering of the layers it was fed."""
        fed = [ok for k, ok in self.outcomes.items() if _kind(k) in ("reversed", "shuffled")]
        return self.relative and bool(fed) and all(fed)


@dataclass
class Audit:
    path: Path
    rows: list[ClaimAudit]
    evidence: dict[str, str]  # model -> run folder used

    def rate(self, kind: str, finding: bool | None = None) -> tuple[int, int]:
        """(passed, fed) over every wrong input of ``kind`` (``finding``: finding claims only, or hypothesis)."""
        passed = fed = 0
        for r in self.rows:
            if finding is not None and r.finding != finding:
                continue
            for k, ok in r.outcomes.items():
                if _kind(k) == kind:
                    fed += 1
                    passed += ok
        return passed, fed

    def claims_passing(self, kind: str, finding: bool | None = None, absolute: bool = False) -> tuple[int, int]:
        """(claims passing every input of ``kind``, claims fed one); ``absolute``: leaving out the claims stated
        in relative depth, which may pass a swap (:attr:`ClaimAudit.relative`)."""
        fed = [
            r
            for r in self.rows
            if (finding is None or r.finding == finding)
            and not (absolute and r.relative)
            and any(_kind(k) == kind for k in r.outcomes)
        ]
        return sum(all(ok for k, ok in r.outcomes.items() if _kind(k) == kind) for r in fed), len(fed)

    @property
    def blind(self) -> list[ClaimAudit]:
        return [r for r in self.rows if r.blind and not r.claim.invariant]

    @property
    def invariants(self) -> list[ClaimAudit]:
        return [r for r in self.rows if r.claim.invariant]

    @property
    def wrong_on_right(self) -> list[ClaimAudit]:
        return [r for r in self.rows if r.right is False]

    @property
    def order_blind(self) -> list[ClaimAudit]:
        return [r for r in self.rows if r.order_blind and not r.claim.invariant]

    @property
    def ok(self) -> bool:
        return not self.blind and not self.wrong_on_right and not self.order_blind

    def table(self) -> str:
        """Per claim: pass on the right evidence, and the wrong inputs it fails under; then the pass rates."""
        out = [
            f"claims audit of {self.path} ({len(self.rows)} claims); evidence: "
            + ", ".join(f"{m} = {d}" for m, d in self.evidence.items()),
            "",
        ]
        w = max((len(r.claim.id) for r in self.rows), default=5)
        out.append(f"{'claim'.ljust(w)}  right  fails under")
        for r in self.rows:
            right = "-" if r.right is None else ("pass" if r.right else "FAIL")
            fails = ", ".join(r.fails_under) or ("PASSES EVERY WRONG INPUT" if r.outcomes else "not fed")
            tag = f"  [invariant: {r.claim.invariant}]" if r.claim.invariant else ""
            out.append(f"{r.claim.id.ljust(w)}  {right.ljust(5)}  {fails}{tag}")
        out += ["", "wrong input          finding claims passing    hypothesis claims passing"]
        for kind in KINDS:
            cells = []
            for finding in (True, False):
                p, n = self.claims_passing(kind, finding)
                cells.append(f"{p} of {n} ({100 * p / n:.0f}%)" if n else "-")
            out.append(f"{kind.ljust(20)} {cells[0].ljust(25)} {cells[1]}")
        p, n = self.claims_passing("swapped", True, absolute=True)
        if n:
            out.append(
                f"{'swapped, absolute':20} {p} of {n} ({100 * p / n:.0f}%)".ljust(47)
                + "  (leaving out the claims in relative depth, which may hold on a model of another depth)"
            )
        out.append("")
        if self.invariants:
            out.append(f"declared invariants ({len(self.invariants)}):")
            out += [f"  {r.claim.id}: {r.claim.invariant}" for r in self.invariants]
        if self.wrong_on_right:
            out.append("FAIL on the right evidence: " + ", ".join(r.claim.id for r in self.wrong_on_right))
        if self.order_blind:
            out.append(
                f"FAIL: {len(self.order_blind)} claim(s) in relative depth pass every reordering of the layers "
                "(a relative-depth claim may pass a swap, never a reordering): "
                + ", ".join(r.claim.id for r in self.order_blind)
            )
        if self.blind:
            out.append(
                f"FAIL: {len(self.blind)} claim(s) pass under every wrong input (declare each an invariant "
                "with its reason, or make it tell models apart): " + ", ".join(r.claim.id for r in self.blind)
            )
        else:
            out.append("ok: every claim that is not a declared invariant fails under some wrong input")
        return "\n".join(out)


def _kind(label: str) -> str:
    return next(k for k in KINDS if label.startswith(k))


def orders(n: int, seeds: Sequence[int]) -> dict[str, list[int]]:
    """The layer orders fed: reversed, and shuffled with each seed (new layer i takes old layer order[i])."""
    out = {"reversed": list(range(n))[::-1]}
    for s in seeds:
        order = list(range(n))
        random.Random(s).shuffle(order)
        out[f"shuffled seed {s}"] = order
    return out


def relayered_stats(run: StoredRun, order: Sequence[int]) -> dict[str, Stat]:
    """The run's finding statistics with every per-layer array reordered by ``order`` (each experiment's
    declared ``relayer``; experiments without one have no per-layer arrays and stay as they are)."""
    specs = experiments()
    results = {}
    for name, result in run.results.items():
        spec = specs.get(name)
        results[name] = spec.relayer(result, list(order)) if spec is not None and spec.relayer else result
    return model_statistics(results, run.require_n_layers())


def find_evidence(cf: ClaimsFile, dirs: Sequence[str | Path]) -> dict[str, StoredRun]:
    """Model name -> run, for the runs in ``dirs`` of the claims file's profile (one per model)."""
    out: dict[str, StoredRun] = {}
    for d in dirs:
        try:
            r = load_run(d)
        except AtlasError:
            continue
        if cf.profile not in ("any", r.profile) or r.name in out:
            continue
        out[r.name] = r
    return out


def audit(path: str | Path, runs: Sequence[str | Path], seeds: Sequence[int] = (0, 1, 2, 3, 4)) -> Audit:
    """Evaluate every claim of ``path`` on the right evidence and on every wrong input made from ``runs``
    (run folders; the claimed models' runs among them, and others of the same profile to substitute)."""
    cf = load_claims(path)
    pool = find_evidence(cf, runs)

    def run_of(model: str) -> StoredRun | None:
        return next((r for name, r in pool.items() if same_model(model, name)), None)

    claimed = [m for m in cf.models if run_of(m) is not None]
    missing = [m for m in cf.models if run_of(m) is None]
    if missing:
        raise AtlasError(
            f"claims audit of {path}: no run of {', '.join(missing)} at the {cf.profile} profile among "
            f"{len(list(runs))} run folder(s); pass the runs the claims were written from"
        )
    others = [r for name, r in pool.items() if not any(same_model(m, name) for m in cf.models)]
    relayered: dict[tuple[str, str], dict] = {}

    def shuffled(r: StoredRun) -> dict[str, dict]:
        out = {}
        for label, order in orders(r.require_n_layers(), seeds).items():
            key = (r.name, label)
            if key not in relayered:
                relayered[key] = relayered_stats(r, order)
            out[label] = relayered[key]
        return out

    rows = []
    small, large = (run_of(cf.models[0]), run_of(cf.models[1])) if len(cf.models) == 2 else (None, None)
    for c in cf.claims:

        def ev(stats, names) -> bool:
            try:
                return evaluate(c, stats, names, cf.thresholds).passed
            except AtlasError:
                return False  # the wrong evidence lacks what the claim reads: it cannot pass

        row = ClaimAudit(c, None)
        if c.hypothesis:
            if small is None:
                rows.append(row)
                continue
            row.right = ev([small.stats, large.stats], [small.name, large.name])
            row.outcomes["swapped"] = ev([large.stats, small.stats], [large.name, small.name])
            for o in others:
                row.outcomes[f"substituted {o.name} as small"] = ev([o.stats, large.stats], [o.name, large.name])
                row.outcomes[f"substituted {o.name} as large"] = ev([small.stats, o.stats], [small.name, o.name])
            row.outcomes["same model twice (small)"] = ev([small.stats, small.stats], [small.name, small.name])
            row.outcomes["same model twice (large)"] = ev([large.stats, large.stats], [large.name, large.name])
            ss, ls = shuffled(small), shuffled(large)
            for label in ss:
                row.outcomes[label] = ev([ss[label], ls[label]], [small.name, large.name])
        else:
            own = run_of(c.models[0])
            if own is None:
                rows.append(row)
                continue
            row.right = ev([own.stats], [own.name])
            for m in claimed:
                r = run_of(m)
                if r is not own:
                    row.outcomes[f"swapped ({r.name})"] = ev([r.stats], [r.name])
            for o in others:
                row.outcomes[f"substituted {o.name}"] = ev([o.stats], [o.name])
            for label, stats in shuffled(own).items():
                row.outcomes[label] = ev([stats], [own.name])
        rows.append(row)
    return Audit(Path(path), rows, {r.name: str(r.root) for r in [run_of(m) for m in claimed] + others})


def baseline_runs(profile: str | None = None) -> list[Path]:
    """The committed baselines (``atlas_core/data/baselines``), the stored runs the default tier audits on."""
    from atlas_core.data import BASELINES_DIR

    return sorted(
        p for p in Path(BASELINES_DIR).iterdir() if p.is_dir() and (profile is None or p.name.endswith(f"-{profile}"))
    )


def audit_stats(rows: Sequence[ClaimAudit]) -> Mapping[str, int]:
    return {
        "claims": len(rows),
        "blind": sum(r.blind and not r.claim.invariant for r in rows),
        "invariants": sum(bool(r.claim.invariant) for r in rows),
    }


@dataclass
class Check:
    """A claims file evaluated on other runs of its own models (another dtype, device or thread count): per
    claim, passed, failed, or not evaluated because a run lacks an experiment it reads."""

    path: Path
    runs: dict[str, str]  # model -> run folder
    results: list[tuple[Claim, bool | None, str]]  # (claim, passed or None: not evaluated, message or reason)

    def counts(self, finding: bool | None = None) -> tuple[int, int, int]:
        rows = [r for r in self.results if finding is None or (r[0].hypothesis is None) == finding]
        return (
            sum(ok is True for _, ok, _ in rows),
            sum(ok is False for _, ok, _ in rows),
            sum(ok is None for _, ok, _ in rows),
        )

    def by_group(self) -> dict[str, tuple[int, int]]:
        """(passed, failed) per model x statistic group (``H00x`` for hypothesis claims)."""
        out: dict[str, list[int]] = {}
        for c, ok, _ in self.results:
            if ok is None:
                continue
            key = c.hypothesis or f"{c.models[0]}:{c.statistic.split('.')[0]}"
            out.setdefault(key, [0, 0])[0 if ok else 1] += 1
        return {k: (p, f) for k, (p, f) in out.items()}

    def table(self) -> str:
        out = [f"claims check of {self.path} on " + ", ".join(f"{m} = {d}" for m, d in self.runs.items()), ""]
        out += [f"{'pass' if ok else 'FAIL'}  {msg}" for c, ok, msg in self.results if ok is not None]
        out += ["", "group                                          passed  failed"]
        out += [f"{g.ljust(46)} {p:6d}  {f:6d}" for g, (p, f) in sorted(self.by_group().items())]
        for label, finding in (("finding", True), ("hypothesis", False)):
            p, f, n = self.counts(finding)
            out.append(
                f"{label} claims: {p} passed, {f} failed, {n} not evaluated (the runs lack an experiment they read)"
            )
        return "\n".join(out)


def check_on_runs(path: str | Path, runs: Sequence[str | Path]) -> Check:
    """Evaluate every claim of ``path`` on ``runs`` (one per claimed model, of the file's profile; they may lack
    experiments: those claims are listed as not evaluated, never as failed)."""
    cf = load_claims(path)
    pool = find_evidence(cf, runs)
    of = {m: next((r for n, r in pool.items() if same_model(m, n)), None) for m in cf.models}
    missing = [m for m, r in of.items() if r is None]
    if missing:
        raise AtlasError(
            f"claims check of {path}: no run of {', '.join(missing)} at the {cf.profile} profile among "
            f"{len(list(runs))} run folder(s)"
        )
    results = []
    for c in cf.claims:
        rs = [of[m] for m in c.models]
        lacking = sorted({e for r in rs for e in c.experiments if not r.has(e)})
        if lacking:
            results.append((c, None, f"{c.id}: the runs lack {', '.join(lacking)}"))
            continue
        ev = evaluate(c, [r.stats for r in rs], [r.name for r in rs], cf.thresholds)
        results.append((c, ev.passed, ev.message))
    return Check(Path(path), results=results, runs={m: str(r.root) for m, r in of.items()})
