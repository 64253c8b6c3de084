"""The Atlas pytest plugin: options, tiers, claims-driven parametrization, the run-store session (the
``atlas`` fixture) and the hook-leak guard.

Installing atlas-interp registers it (the ``pytest11`` entry point ``atlas_core.pytest_plugin``, named after
the module so that ``-p atlas_core.pytest_plugin`` and the entry point are one registration, never two).

Tiers (``--atlas-tier``, default ``default``; without ``-m`` the tier selects the tests, with ``-m`` the
marker expression does and the tier only sets the claims' defaults)::

    default   everything not marked ``pair`` or ``slow``: unit and property tests, real-model tests on
              Coder-0.5B with the golden check, the hypothesis and finding suite checked against the
              committed full-profile baselines of the Coder pair (stored results only, no recompute)
    pair      the hypothesis and finding suite recomputed at the ci profile for both Coder models
              (coder-pair-ci.toml), and the tests marked ``pair``
    slow      the tests marked ``slow``: benchmarks and other runs of minutes

Options::

    --atlas-tier NAME           default | pair | slow (above)
    --atlas-model NAME          one model under test (its finding claims; the regression candidate)
    --atlas-pair SMALL LARGE    the pair for hypothesis claims (default: the Qwen2.5-Coder pair,
                                unless --atlas-model is given alone)
    --atlas-profile NAME        smoke | ci | full | exhaustive (default: the tier's for the default pair, full
                                in the default tier and ci in the pair tier; ci when models are named; with
                                --atlas-baseline, the baseline's)
    --atlas-device DEVICE       cpu | cuda | cuda:N (default: the loader's choice)
    --atlas-tasks DIR           a folder of the user's <family>.json task files, added to the built-in
                                families (validated at start; a name colliding with a built-in one is an error)
    --atlas-claims FILE         claims file (repeatable). Default: every shipped claims file
                                (atlas_core/data/claims/),
                                each claim running only where its models and profile are the
                                session's (the others are skipped with a reason saying what to pass).
                                Files given here apply to the session's models whatever their names.
    --atlas-runs DIR            the run store (default reports/runs; one folder per model and profile,
                                named as ``atlas run`` names them)
    --atlas-baselines DIR       committed records that seed an empty run store (default
                                the shipped atlas_core/data/baselines; ``none``: compute everything)
    --atlas-baseline RUN_DIR    regression: check every finding of --atlas-model against this run
    --atlas-no-compute          stored results only: a test whose experiment has no stored (or seeded)
                                result matching this code and these weights fails, naming it, instead
                                of computing it (a stale baseline fails in seconds, not after hours)

Hypothesis and finding tests take a ``claim`` argument; ``pytest_generate_tests`` parametrizes it
with the claims whose group matches the test's marker (``h003`` -> claims on H003, ``finding_hub``
-> ``hub.*`` claims, ``atlas_claims`` -> every claim: what a project checking its own claims file
uses). The ``atlas`` session fixture computes, through ``orchestrate.run_plan`` and the run store, only
the experiments the selected (not deselected, not skipped) tests need, once per session per model,
reusing stored results whose config hash matches.

This repository's own model fixtures (``tiny``, ``coder05``, ...) live in ``tests_atlas/conftest.py``.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from pathlib import Path

import pytest

from atlas_core.hooks import global_hooks, module_hooks, remove_hooks

# the atlas columns and plots in pytest-html reports (all optional hooks: harmless without pytest-html)
pytest_plugins = ["atlas_core.report.pytest_html_hooks"]

DEFAULT_PAIR = ("qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct")
DEFAULT_PROFILE = "ci"


@dataclass(frozen=True)
class Tier:
    """A test tier: which tests it selects (by marker) and the claims profile of the default pair."""

    name: str
    markers: tuple[str, ...]  # the tier's own markers (empty: the tests carrying none of the other tiers')
    profile: str
    stored_only: bool  # the default pair's claims read committed baselines instead of recomputing
    about: str
    claims: bool = False  # the tier also selects every claims test (hypotheses and findings)


TIERS = {t.name: t for t in (
    Tier("default", (), "full", True, "unit and property tests, Coder-0.5B real-model tests and the golden check, "
         "the hypothesis and finding suite against the committed full-profile Coder baselines (no recompute), reports"),
    Tier("pair", ("pair",), "ci", False, "the hypothesis and finding suite recomputed at the ci profile for both "
         "Coder models (coder-pair-ci.toml), and the tests marked pair", claims=True),
    Tier("slow", ("slow",), DEFAULT_PROFILE, False, "benchmarks and other tests that take minutes"),
)}
ALL_CLAIMS = "atlas_claims"  # a claims test over every claim, whatever its group (a user's own claims file)
BASE_MARKERS = {
    "real_model": "loads a real pretrained model through the project's own fetch (runs on CPU in CI)",
    "gpu": "needs a CUDA device; skipped where none exists",
    "slow": "the slow tier: takes minutes on a 2-core CPU (benchmarks); run with --atlas-tier slow or -m slow",
    "pair": "the pair tier: recomputes the Coder pair at the ci profile; run with --atlas-tier pair",
}


def group_markers() -> dict[str, str]:
    """The markers that select claims tests, from the specs: ``h003`` per hypothesis, ``finding_hub`` per
    experiment with finding tests."""
    from atlas_core.spec import finding_markers, hypothesis_markers

    return {**hypothesis_markers(), **finding_markers(),
            ALL_CLAIMS: "a claims test (argument claim) over every claim of the session's claims files, whatever "
                        "its statistic (clean.accuracy.<family> included)"}



@pytest.fixture(autouse=True)
def _no_hook_leaks():
    """Every test ends with no hook of any kind left on any model the session loaded (through
    ``atlas_core.models.load``, which every model fixture uses), and no torch global module hook it did not
    start with. What it finds it removes before failing, so the next test starts clean."""
    from atlas_core.models.loader import LOADED_MODELS

    before = set(global_hooks())
    yield
    found = []
    for model, name in list(LOADED_MODELS.items()):
        left = module_hooks(model)
        remove_hooks(left)
        found += [f"{len(left)} hook(s) left on {name}"] if left else []
    stray = [h for h in global_hooks() if h not in before]
    remove_hooks(stray)
    found += [f"{len(stray)} global module hook(s) left"] if stray else []
    assert not found, f"{'; '.join(found)} after the test (removed now): an intervention did not clean up"


# ----------------------------------------------------------------------------------------------
# options


def pytest_addoption(parser):
    g = parser.getgroup("atlas", "Atlas hypothesis suite")
    g.addoption("--atlas-tier", default="default", choices=tuple(TIERS),
                help="test tier: " + "; ".join(f"{t.name}: {t.about}" for t in TIERS.values()))
    g.addoption("--atlas-model", default=None, metavar="NAME",
                help="model under test: registered name, local folder, hub id or .gguf (its finding claims; "
                     "the regression candidate)")
    g.addoption("--atlas-pair", nargs=2, default=None, metavar=("SMALL", "LARGE"),
                help=f"model pair for the hypotheses, small then large (default: {' '.join(DEFAULT_PAIR)})")
    g.addoption("--atlas-profile", default=None, help=f"smoke | ci | full | exhaustive (default {DEFAULT_PROFILE})")
    g.addoption("--atlas-device", default=None, help="cpu | cuda | cuda:N (default: cuda if present)")
    g.addoption("--atlas-ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                help="compute missing results with sweeps sharded over Ray actors (atlas run --ray): ADDRESS of "
                     "a cluster, or none to start a local one")
    g.addoption("--atlas-claims", action="append", default=None, metavar="FILE",
                help="claims file (repeatable; default: every shipped claims file, each claim run "
                     "only for its own models and profile)")
    g.addoption("--atlas-tasks", default=None, metavar="DIR",
                help="a folder of <family>.json task files (the built-in families' format), added to the built-in "
                     "families")
    g.addoption("--atlas-runs", default="reports/runs", metavar="DIR", help="run store (default reports/runs)")
    g.addoption("--atlas-baselines", default=None, metavar="DIR",
                help="committed baseline records that seed an empty run store (default: the shipped ones; "
                     "'none' to compute everything)")
    g.addoption("--atlas-baseline", default=None, metavar="RUN_DIR",
                help="regression: check every finding of --atlas-model against this stored run")
    g.addoption("--atlas-no-compute", action="store_true", default=False,
                help="stored results only: fail a test whose experiment has no matching stored result "
                     "instead of computing it")


@dataclass(frozen=True)
class ResolvedClaim:
    """A claim bound to the session's model names, or with the reason it cannot run here."""

    claim: object  # atlas_core.claims.Claim
    file: str
    models: tuple[str, ...] | None
    skip: str | None = None

    def __repr__(self) -> str:
        return f"{self.file}:{self.claim.id}"


@dataclass(frozen=True)
class DriftCheck:
    """One statistic of the baseline run to compare with the candidate's."""

    statistic: str
    candidate: str

    def __repr__(self) -> str:
        return self.statistic


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
        self.baselines_dir = (None if seeds == "none" else
                              BASELINES_DIR if seeds is None else Path(seeds).expanduser().resolve())
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
                raise pytest.UsageError(f"--atlas-profile {profile} differs from the baseline's profile "
                                        f"{self.baseline.profile}: a regression compares like with like")
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
        tasks = opt("atlas_tasks")
        self.tasks: Path | None = Path(tasks).expanduser().resolve() if tasks else None

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
                    return ResolvedClaim(claim, name, None, f"{claim.id} is about a model pair; pass --atlas-pair SMALL LARGE")
                return ResolvedClaim(claim, name, tuple(self.pair))
            if self.model:
                return ResolvedClaim(claim, name, (self.model,))
            roles = list(cf.models)
            for m in self.models:
                if same_model(claim.models[0], m):
                    return ResolvedClaim(claim, name, (m,))
            if claim.models[0] in roles and self.pair and len(roles) == 2:
                return ResolvedClaim(claim, name, (self.pair[roles.index(claim.models[0])],))
            return ResolvedClaim(claim, name, None, f"claims for {claim.models[0]}; pass --atlas-model NAME to "
                                                    "check them on another model")
        if cf.profile not in ("any", self.profile):
            return ResolvedClaim(claim, name, None, f"claims of the {cf.profile} profile ({name}); "
                                                    f"pass --atlas-profile {cf.profile} to run them")
        if claim.hypothesis:
            if self.pair and all(same_model(c, m) for c, m in zip(claim.models, self.pair)):
                return ResolvedClaim(claim, name, tuple(self.pair))
            hint = " ".join(f"/path/to/{_base(m)}" for m in claim.models)
            return ResolvedClaim(claim, name, None, f"claims for the pair {' and '.join(claim.models)}; "
                                                    f"pass --atlas-pair {hint} to run them")
        for m in self.models:
            if same_model(claim.models[0], m):
                return ResolvedClaim(claim, name, (m,))
        return ResolvedClaim(claim, name, None, f"claims for {claim.models[0]}; pass --atlas-model "
                                                f"/path/to/{_base(claim.models[0])} to run them")

    def params_for(self, group: str) -> list:
        out = []
        for cf in self.claims_files():
            for claim in cf.claims:
                if group not in (ALL_CLAIMS, claim.group):
                    continue
                rc = self.resolve(cf, claim)
                marks = [pytest.mark.skip(reason=rc.skip)] if rc.skip else []
                out.append(pytest.param(rc, id=f"{cf.name}:{claim.id}", marks=marks))
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
                run_plan(RunPlan(model=model, experiments=exps, profile=self.profile, out=out, device=self.device, ray=ray,
                                 tasks=self.tasks, report=False, progress=True, compute=self.compute,
                                 wait=True))  # xdist workers needing one experiment: one computes, the others read
            except AtlasError as exc:  # recorded: the other tests needing the model fail at once, no retry
                if self.compute:
                    self._failed[model] = f"{model}: {exc}"
                elif self.config.getoption("atlas_no_compute"):
                    self._failed[model] = f"--atlas-no-compute: {exc} (or drop --atlas-no-compute to compute them)"
                else:
                    self._failed[model] = (f"the {self.tier.name} tier checks stored results only: {exc} (or pass "
                                           f"--atlas-profile {self.profile} to compute them in this session)")
                pytest.fail(self._failed[model], pytrace=False)
            self.timings[model] = time.perf_counter() - t0
            gc.collect()
        self._done[model] = load_run(out).stats if exps else {}
        return self._done[model]

    def evaluate(self, rc: ResolvedClaim):
        """Check a bound claim against the session's runs (computing what is missing)."""
        from atlas_core.claims import evaluate

        if rc.models is None:
            pytest.skip(rc.skip or "claim not bound to a model")
        stats = [self.ensure(m) for m in rc.models]
        return evaluate(rc.claim, stats, rc.models, self.thresholds(rc.file))

    def drift(self, check: DriftCheck):
        """The comparison row of one baseline statistic against the candidate's run."""
        from atlas_core.claims import ComparisonRow, compare_stats

        cand = self.ensure(check.candidate)
        base = self.baseline
        rows = compare_stats({check.statistic: base.stats[check.statistic]},
                             {k: v for k, v in cand.items() if k == check.statistic},
                             model_a=f"{base.name} ({base.root})", model_b=check.candidate)
        if not rows:  # a ranking statistic: compared through the top layer
            return ComparisonRow(check.statistic, check.statistic.split(".")[0], base.stats[check.statistic],
                                 cand.get(check.statistic), None, None, False, base.name, check.candidate)
        return rows[0]


SESSION = pytest.StashKey[AtlasSession]()  # the session's AtlasSession in ``config.stash``
GROUPS = pytest.StashKey[dict]()  # marker -> what it selects, for the claims-test markers (from the specs)
REGISTERED = pytest.StashKey[list]()  # what the project's hooks registered (removed at unconfigure)


def _base(name: str) -> str:
    return Path(str(name).rstrip("/")).name


def validate_options(config) -> None:
    """The --atlas-* values that can be wrong, checked once at start: a bad one is a usage error naming it,
    not a failure in every test that needs it."""
    from atlas_core import AtlasError
    from atlas_core.models.loader import check_model_source, resolve_device
    from atlas_core.orchestrate import check_model_name, check_writable_dir

    opt = config.getoption
    checks = [("--atlas-device", lambda: resolve_device(opt("atlas_device")))]
    models = [opt("atlas_model")] + list(opt("atlas_pair") or [])
    for m in filter(None, models):
        checks.append((f"--atlas-model/--atlas-pair {m}", lambda m=m: (check_model_name(m), check_model_source(m))))
    runs = Path(opt("atlas_runs")).expanduser()
    checks.append(("--atlas-runs", lambda: check_writable_dir(runs if runs.is_absolute() else config.rootpath / runs,
                                                              "the run store")))
    seeds = opt("atlas_baselines")
    if seeds not in (None, "none") and not Path(seeds).expanduser().is_dir():
        raise pytest.UsageError(f"--atlas-baselines {seeds}: no such folder; pass the folder of committed baselines "
                                "(atlas_core/data/baselines) or 'none'")
    if opt("atlas_tasks"):
        from atlas_core.tasks import load_families

        checks.append(("--atlas-tasks", lambda: load_families(user_dir=opt("atlas_tasks"))))
    for path in opt("atlas_claims") or []:
        if not Path(path).expanduser().is_file():
            raise pytest.UsageError(f"--atlas-claims {path}: no such file; pass a claims file (a TOML file like atlas_core/data/claims/*.toml)")
    for what, check in checks:
        try:
            check()
        except AtlasError as exc:
            raise pytest.UsageError(f"{what}: {exc}") from None


def pytest_addhooks(pluginmanager):
    from atlas_core import pytest_hookspecs

    pluginmanager.add_hookspecs(pytest_hookspecs)


def register_project_specs(config) -> list[str]:
    """Register what the project's ``pytest_atlas_experiments``/``pytest_atlas_hypotheses`` return; the
    keys registered (removed again at unconfigure)."""
    from atlas_core import AtlasError
    from atlas_core.spec import register

    keys = []
    for hook, attr in ((config.hook.pytest_atlas_experiments, "name"), (config.hook.pytest_atlas_hypotheses, "id")):
        for specs in hook(config=config):
            try:
                register(specs or (), where=hook.name)
            except AtlasError as exc:
                raise pytest.UsageError(f"{hook.name}: {exc}") from None
            keys += [getattr(s, attr) for s in specs or ()]
    return keys


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


def pytest_unconfigure(config):
    from atlas_core.spec import unregister

    unregister(config.stash.get(REGISTERED, ()))


def in_tier(item, tier: Tier) -> bool:
    """Whether the tier selects ``item``: its markers, and every claims test where the tier takes them."""
    if tier.markers:
        groups = tuple(item.config.stash[GROUPS]) if tier.claims else ()
        return any(item.get_closest_marker(m) for m in tier.markers + groups)
    return not any(item.get_closest_marker(m) for t in TIERS.values() for m in t.markers)


def pytest_generate_tests(metafunc):
    session = metafunc.config.stash[SESSION]
    if "claim" in metafunc.fixturenames:
        known = metafunc.config.stash[GROUPS]
        groups = [m.name for m in metafunc.definition.iter_markers() if m.name in known]
        if len(groups) != 1:
            raise pytest.UsageError(f"{metafunc.definition.nodeid}: a claims test carries exactly one of the "
                                    f"markers {', '.join(known)} (found {groups or 'none'})")
        metafunc.parametrize("claim", session.params_for(groups[0]))
    if "drift" in metafunc.fixturenames:
        base = session.baseline
        if base is None:
            metafunc.parametrize("drift", [pytest.param(None, id="no-baseline", marks=pytest.mark.skip(
                reason="regression check: pass --atlas-model CANDIDATE --atlas-baseline RUN_DIR"))])
            return
        params = []
        for name, stat in base.stats.items():
            if stat.kind == "ranking":
                continue
            group = name.split(".")[0]
            known = metafunc.config.stash[GROUPS]
            marks = [getattr(pytest.mark, f"finding_{group}")] if f"finding_{group}" in known else []
            params.append(pytest.param(DriftCheck(name, session.model), id=name, marks=marks))
        metafunc.parametrize("drift", params)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    import torch

    if not config.option.markexpr:  # an explicit -m expression selects by itself
        tier = config.stash[SESSION].tier
        dropped = [item for item in items if not in_tier(item, tier)]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = [item for item in items if in_tier(item, tier)]
    config.stash[SESSION].items = items  # the selected items (the mark/keyword plugins deselect before us)
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU; none on this machine (runs where one exists)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def atlas(pytestconfig) -> AtlasSession:
    """The session's models, claims and runs (experiments computed once, on first need)."""
    return pytestconfig.stash[SESSION]


def pytest_terminal_summary(terminalreporter, config):
    session = config.stash.get(SESSION, None)
    if session:
        terminalreporter.write_line(f"atlas tier: {session.tier.name} ({session.tier.about}); claims profile "
                                    f"{session.profile}{'' if session.compute else ', stored results only'}")
    if session and session.timings:
        terminalreporter.write_sep("-", "atlas runs")
        for model, secs in session.timings.items():
            terminalreporter.write_line(f"{model}: experiments ready in {secs:.1f}s -> {session.run_dir(model)}")
