"""The run-store session: what the options select (models, profile, claims) and the runs, computed once on
demand through ``orchestrate.run_plan``; the ``atlas`` fixture that hands it to the tests, the configure hook
that builds it, and the terminal summary."""

from __future__ import annotations

import gc
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from atlas_core.pytest.drift import DriftCheck, drift_row
from atlas_core.pytest.options import (
    ALL_CLAIMS,
    BASE_MARKERS,
    DEFAULT_PAIR,
    DEFAULT_PROFILE,
    GROUPS,
    TIERS,
    group_markers,
    validate_options,
)
from atlas_core.pytest.registration import REGISTERED, register_project_specs


@dataclass(frozen=True)
class ResolvedClaim:
    """A claim bound to the session's model names, or with the reason it cannot run here."""

    claim: object  # atlas_core.claims.Claim
    file: str
    models: tuple[str, ...] | None
    skip: str | None = None

    def __repr__(self) -> str:
        return f"{self.file}:{self.claim.id}"


class AtlasSession:
    """What the options select: models, profile, claims; and the runs, computed once on demand."""

    def __init__(self, config):
        from atlas_core import AtlasError

        opt = config.getoption
        self.config = config
        self.tier = TIERS[opt("atlas_tier")]
        self.model: str | None = opt("atlas_model")
        pair = opt("atlas_pair")
        self.pair: tuple[str, str] | None = tuple(pair) if pair else (None if self.model else DEFAULT_PAIR)
        self.device = opt("atlas_device")
        self.ray = opt("atlas_ray")  # None, "local" or a cluster address
        runs = Path(opt("atlas_runs")).expanduser()
        self.runs_dir = runs if runs.is_absolute() else Path(config.rootpath) / runs
        from atlas_core.baselines import BASELINES_DIR

        seeds = opt("atlas_baselines")
        self.baselines_dir = (
            None if seeds == "none" else BASELINES_DIR if seeds is None else Path(seeds).expanduser().resolve()
        )
        self.baseline = None
        profile = opt("atlas_profile")
        if opt("atlas_baseline"):
            from atlas_core.runs import load_run

            if not self.model:
                raise pytest.UsageError("--atlas-baseline RUN_DIR needs --atlas-model CANDIDATE (the model to check)")
            try:
                self.baseline = load_run(opt("atlas_baseline"))
            except AtlasError as exc:
                raise pytest.UsageError(f"--atlas-baseline: {exc}") from None
            if profile and profile != self.baseline.profile:
                raise pytest.UsageError(
                    f"--atlas-profile {profile} differs from the baseline's profile "
                    f"{self.baseline.profile}: a regression compares like with like"
                )
            profile = self.baseline.profile
        tier_default = profile is None and not self.model and not pair  # the default pair, as the tier runs it
        self.profile = profile or (self.tier.profile if tier_default else DEFAULT_PROFILE)
        from atlas_core.profiles import get_profile

        try:
            get_profile(self.profile)
        except AtlasError as exc:
            raise pytest.UsageError(f"--atlas-profile: {exc}") from None
        self.explicit_claims = opt("atlas_claims") is not None
        self._claim_paths = [Path(p) for p in (opt("atlas_claims") or [])]
        self._claims = None
        self.compute = not (opt("atlas_no_compute") or (tier_default and self.tier.stored_only))
        self._done: dict[str, dict] = {}
        self._failed: dict[str, str] = {}
        self.timings: dict[str, float] = {}
        self.items: list = []  # the selected test items, set once collection ends
        self.unbound: Counter[str] = Counter()  # deselected claims, by the option that would run them
        tasks = opt("atlas_tasks")
        self.tasks: Path | None = Path(tasks).expanduser().resolve() if tasks else None
        self.screen: str | None = opt("atlas_screen")

    # -- models and claims ------------------------------------------------------------------

    @property
    def models(self) -> list[str]:
        out = list(self.pair or ())
        if self.model and self.model not in out:
            out.append(self.model)
        return out

    def claims_files(self):
        if self._claims is None:
            from atlas_core.claims import default_claims_files, load_claims

            paths = self._claim_paths or default_claims_files()
            self._claims = [load_claims(p) for p in paths]
        return self._claims

    def resolve(self, cf, claim) -> ResolvedClaim:
        """Bind a claim to the session's models, or say why it cannot run in this session."""
        from atlas_core.claims import same_model

        name = cf.name
        if self.explicit_claims:  # the user asked for these claims on the models in front of us
            if claim.hypothesis:
                if not self.pair:
                    return ResolvedClaim(
                        claim, name, None, f"{claim.id} is about a model pair; pass --atlas-pair SMALL LARGE"
                    )
                return ResolvedClaim(claim, name, tuple(self.pair))
            if self.model:
                return ResolvedClaim(claim, name, (self.model,))
            roles = list(cf.models)
            for m in self.models:
                if same_model(claim.models[0], m):
                    return ResolvedClaim(claim, name, (m,))
            if claim.models[0] in roles and self.pair and len(roles) == 2:
                return ResolvedClaim(claim, name, (self.pair[roles.index(claim.models[0])],))
            return ResolvedClaim(
                claim,
                name,
                None,
                f"claims for {claim.models[0]}; pass --atlas-model NAME to check them on another model",
            )
        if cf.profile not in ("any", self.profile):
            return ResolvedClaim(
                claim,
                name,
                None,
                f"claims of the {cf.profile} profile ({name}); pass --atlas-profile {cf.profile} to run them",
            )
        if claim.hypothesis:
            if self.pair and all(same_model(c, m) for c, m in zip(claim.models, self.pair)):
                return ResolvedClaim(claim, name, tuple(self.pair))
            hint = " ".join(f"/path/to/{_base(m)}" for m in claim.models)
            return ResolvedClaim(
                claim,
                name,
                None,
                f"claims for the pair {' and '.join(claim.models)}; pass --atlas-pair {hint} to run them",
            )
        for m in self.models:
            if same_model(claim.models[0], m):
                return ResolvedClaim(claim, name, (m,))
        return ResolvedClaim(
            claim,
            name,
            None,
            f"claims for {claim.models[0]}; pass --atlas-model /path/to/{_base(claim.models[0])} to run them",
        )

    def params_for(self, group: str) -> list:
        out = []
        for cf in self.claims_files():
            for claim in cf.claims:
                if group not in (ALL_CLAIMS, claim.group):
                    continue
                out.append(pytest.param(self.resolve(cf, claim), id=f"{cf.name}:{claim.id}"))
        return out

    def thresholds(self, file: str) -> dict:
        return next(cf.thresholds for cf in self.claims_files() if cf.name == file)

    # -- runs -------------------------------------------------------------------------------

    def run_dir(self, model: str) -> Path:
        """Named as ``atlas run`` names its default output folder."""
        from atlas_core.runs import run_path

        return run_path(model, self.profile, self.runs_dir)

    def needed(self) -> dict[str, set[str]]:
        """model -> experiments, for the selected tests that will run (deselected/skipped ones excluded)."""
        from atlas_core.spec import experiment as spec_of

        need: dict[str, set[str]] = {}
        for item in self.items:
            if item.get_closest_marker("skip"):
                continue
            params = getattr(getattr(item, "callspec", None), "params", {})
            rc, drift = params.get("claim"), params.get("drift")
            if isinstance(rc, ResolvedClaim) and rc.models:
                for m in rc.models:
                    need.setdefault(m, set()).update(rc.claim.experiments)
            if isinstance(drift, DriftCheck) and self.baseline is not None:
                need.setdefault(drift.candidate, set()).update(self.baseline.experiments)
        for exps in need.values():  # what the experiments reuse from one another within a run
            todo = list(exps)
            while todo:
                for req in spec_of(todo.pop()).requires:
                    if req not in exps:
                        exps.add(req)
                        todo.append(req)
        return need

    def ensure(self, model: str) -> dict:
        """The finding statistics of ``model``, after computing (once) whatever the selected tests need."""
        if model in self._done:
            return self._done[model]
        if model in self._failed:  # once per session: the other tests needing it fail with the same message
            pytest.fail(self._failed[model], pytrace=False)
        import time

        from atlas_core import AtlasError
        from atlas_core.baselines import seed_run
        from atlas_core.orchestrate import RunPlan, run_plan
        from atlas_core.runs import load_run

        exps = sorted(self.needed().get(model, set()))
        out = self.run_dir(model)
        if exps:
            from atlas_core.models.loader import resolve_device, resolve_dtype
            from atlas_core.tasks import load_families

            dtype = str(resolve_dtype(None, resolve_device(self.device))).removeprefix("torch.")
            seed_run(out, self.baselines_dir, dtype=dtype, families=list(load_families(None, user_dir=self.tasks)))
            t0 = time.perf_counter()
            try:
                ray = None
                if self.ray is not None:
                    from atlas_core.distributed import RayConfig

                    ray = RayConfig(address=None if self.ray == "local" else self.ray)
                from atlas_core.screening import SCREENED

                screen = self.screen if any(e in SCREENED for e in exps) else None  # where an experiment takes it
                run_plan(
                    RunPlan(
                        model=model,
                        experiments=exps,
                        profile=self.profile,
                        out=out,
                        device=self.device,
                        ray=ray,
                        tasks=self.tasks,
                        report=False,
                        progress=True,
                        compute=self.compute,
                        screen=screen,
                        wait=True,
                    )
                )  # xdist workers needing one experiment: one computes, the others read
            except AtlasError as exc:  # recorded: the other tests needing the model fail at once, no retry
                if self.compute:
                    self._failed[model] = f"{model}: {exc}"
                elif self.config.getoption("atlas_no_compute"):
                    self._failed[model] = f"--atlas-no-compute: {exc} (or drop --atlas-no-compute to compute them)"
                else:
                    self._failed[model] = (
                        f"the {self.tier.name} tier checks stored results only: {exc} (or pass "
                        f"--atlas-profile {self.profile} to compute them in this session)"
                    )
                pytest.fail(self._failed[model], pytrace=False)
            self.timings[model] = time.perf_counter() - t0
            gc.collect()
        self._done[model] = load_run(out).stats if exps else {}
        return self._done[model]

    def evaluate(self, rc: ResolvedClaim):
        """Check a bound claim against the session's runs (computing what is missing)."""
        from atlas_core.claims import evaluate

        assert rc.models is not None, "an unbound claim is deselected at collection (binding._unbound)"
        stats = [self.ensure(m) for m in rc.models]
        return evaluate(rc.claim, stats, rc.models, self.thresholds(rc.file))

    def drift(self, check: DriftCheck):
        """The comparison row of one baseline statistic against the candidate's run."""
        from atlas_core import AtlasError

        if self.baseline is None:
            raise AtlasError("a drift check needs --atlas-baseline RUN_DIR")
        return drift_row(check, self.baseline, self.ensure(check.candidate))


SESSION = pytest.StashKey[AtlasSession]()  # the session's AtlasSession in ``config.stash``


def _base(name: str) -> str:
    return Path(str(name).rstrip("/")).name


def pytest_configure(config):
    config.stash[REGISTERED] = register_project_specs(config)
    config.stash[GROUPS] = group_markers()
    for name, text in {**BASE_MARKERS, **config.stash[GROUPS]}.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    validate_options(config)
    config.stash[SESSION] = AtlasSession(config)
    check_claims(config.stash[SESSION])


def check_claims(session: AtlasSession) -> None:
    """The session's claims files, read and checked at start against the declared statistics and the families
    the session loads: a bad file or a claim on a statistic or family nothing computes is a usage error before
    the first experiment, not a collection traceback or an "n/a" after hours of work."""
    from atlas_core import AtlasError
    from atlas_core.claims.files import check_families
    from atlas_core.tasks import task_files

    try:
        families = task_files(session.tasks)
        for cf in session.claims_files():
            check_families(cf, families, "--atlas-tasks DIR")
    except AtlasError as exc:
        raise pytest.UsageError(f"--atlas-claims: {exc}") from None


@pytest.fixture(scope="session")
def atlas(pytestconfig) -> AtlasSession:
    """The session's models, claims and runs (experiments computed once, on first need)."""
    return pytestconfig.stash[SESSION]


def pytest_terminal_summary(terminalreporter, config):
    session = config.stash.get(SESSION, None)
    if session:
        terminalreporter.write_line(
            f"atlas tier: {session.tier.name} ({session.tier.about}); claims profile "
            f"{session.profile}{'' if session.compute else ', stored results only'}"
        )
        for how, n in sorted(session.unbound.items()):
            terminalreporter.write_line(f"atlas: {n} claim{'s' * (n != 1)} deselected, not for this session: {how}")
    if session and session.timings:
        terminalreporter.write_sep("-", "atlas runs")
        for model, secs in session.timings.items():
            terminalreporter.write_line(f"{model}: experiments ready in {secs:.1f}s -> {session.run_dir(model)}")
