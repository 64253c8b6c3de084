"""Declarations of the study layer: one :class:`ExperimentSpec` per experiment, one :class:`HypothesisSpec`
per hypothesis, and the registries every table is derived from.

An experiment declares, in its own module (``SPEC = ExperimentSpec(...)``), its name, what it requires,
the profile settings it reads, its ``run``, its result type, the statistics it exposes, and how the
report shows it. A hypothesis declares, in its own module, its id, wording, the statistics its rule
reads, its thresholds with their defaults, and the rule. Nothing else lists experiments or hypotheses:
the CLI's experiment names, the run order, the claims' statistic groups and thresholds, the pytest
markers, the report's sections and the comparison's groups all come from :func:`experiments` and
:func:`hypotheses`.

Where specs come from, in order:

1. this package: every module of ``atlas_core.experiments`` and ``atlas_core.hypotheses`` that
   defines ``SPEC``;
2. installed packages, through the entry-point groups ``atlas.experiments`` and ``atlas.hypotheses``
   (each entry point names a spec object or a module holding ``SPEC``);
3. :func:`register` (the pytest plugin calls it with what a project's ``pytest_atlas_hypotheses`` and
   ``pytest_atlas_experiments`` hooks return).

A name declared twice is an error naming both places.
"""

from __future__ import annotations

import importlib
import math
import pkgutil
import re
from dataclasses import dataclass, field
from functools import cache, cached_property
from importlib import metadata
from types import ModuleType
from typing import Any, Callable, Iterable, Mapping

from atlas_core import AtlasError

ENTRY_POINT_GROUPS = {"experiment": "atlas.experiments", "hypothesis": "atlas.hypotheses"}
_HID = re.compile(r"H\d{3,}")


@dataclass(frozen=True)
class Knob:
    """A profile setting an experiment reads that the built-in :class:`~atlas_core.profiles.Profile` does
    not have: its value at each named profile, and ``default`` for any other (a custom or golden profile)."""

    name: str
    default: Any
    per_profile: Mapping[str, Any] = field(default_factory=dict)
    about: str = ""

    def value(self, profile: str) -> Any:
        return self.per_profile.get(profile, self.default)


UNITS = ("nats", "fraction", "probability", "ratio", "correlation", "layer", "head", "loss", "count")
AXES = (None, "layer", "head", "family")


@dataclass(frozen=True)
class StatDecl:
    """What a statistic is, declared once beside the experiment that computes it: the one declaration of its
    name (the claims preflight enumerates these) and of its facts (hygiene, claims writing, the report, the audit).

    ``name`` is the statistic's exact name, or a template of names: ``{family}`` stands for a task family's
    name, ``*`` for one other name part (an exit's depth, a layer); the first declaration of an experiment
    that matches a name wins. A claim on a name no declaration matches is refused when its file is read.
    ``unit`` drives the report's number format (``fraction``: percent; ``ratio``:
    ``x``); ``lo``/``hi`` bound its plausible values and ``null`` is the value meaning "no effect" (claim
    hygiene refuses claims that accept the whole range or hold the null while expecting an effect);
    ``direction`` is +1 when larger means a stronger effect, -1 when smaller does, 0 when neither;
    ``axis`` says that it is a per-layer (or per-head, per-family) profile, of which ``atlas claims
    write`` writes location, top-k and profile claims; ``order_constructed`` says why a profile's order (its
    top, top-k set and rank correlation) is fixed by construction while its values are not (its location,
    top-k and profile claims are refused, its per-layer value claims kept); ``at`` (``layer`` or ``head``)
    says that the value is read at one item of a profile its Stat carries (``series["at"]``), so that its
    claims name that item and fail where another item holds the value; ``constructed`` says why the
    experiment fixes it whatever the model (claims of it are refused); ``invariant`` says why every healthy
    model shows it (its claims are declared invariants)."""

    name: str
    unit: str
    lo: float = -math.inf
    hi: float = math.inf
    null: float | None = None
    direction: int = 1
    axis: str | None = None
    constructed: str | None = None
    about: str = ""
    order_constructed: str | None = None
    at: str | None = None
    # why any healthy model shows it (the same on every model measured): its claims are written as declared
    # invariants, which the claims audit lists apart instead of requiring them to fail on another model
    invariant: str | None = None

    def __post_init__(self):
        if self.unit not in UNITS:
            raise AtlasError(f"statistic {self.name}: unit {self.unit!r} is not one of {', '.join(UNITS)}")
        if self.axis not in AXES:
            raise AtlasError(f"statistic {self.name}: axis {self.axis!r} is not one of {AXES}")
        if not self.lo <= self.hi:
            raise AtlasError(f"statistic {self.name}: plausible range [{self.lo}, {self.hi}] is empty")
        if self.null is not None and not self.lo <= self.null <= self.hi:
            raise AtlasError(f"statistic {self.name}: null {self.null} lies outside [{self.lo}, {self.hi}]")
        if self.direction not in (-1, 0, 1):
            raise AtlasError(f"statistic {self.name}: direction must be -1, 0 or 1")
        if self.at not in (None, "layer", "head"):
            raise AtlasError(f"statistic {self.name}: at {self.at!r} is not None, 'layer' or 'head'")
        if self.order_constructed and self.axis not in ("layer", "head"):
            raise AtlasError(f"statistic {self.name}: order_constructed is for a per-layer or per-head profile (axis)")

    def match(self, name: str) -> re.Match | None:
        """The match of ``name`` against this declaration (its ``family`` group: the task family named), or None."""
        return _pattern(self.name).fullmatch(name)

    def matches(self, name: str) -> bool:
        return self.match(name) is not None

    @property
    def fmt(self) -> str:
        """The report's number kind: ``pct`` for fractions, ``x`` for ratios, ``auto`` otherwise."""
        return {"fraction": "pct", "ratio": "x"}.get(self.unit, "auto")


# The golden check's relative tolerances, set from measurement (fixtures/golden/thread_deviation.py): the record,
# computed on an Intel CPU with AMX at 2 threads, against an AMD EPYC (AVX2) at 1 and at 2 threads. Inference
# values moved at most 1.1e-4 relative across the CPUs (head ablation; 9e-6 between thread counts); values
# after the golden slice's four LoRA steps, whose fp32 rounding compounds, moved 3.0e-3 (adapter ablation;
# 2.7e-4 between thread counts). Each tolerance is about 3x its measured deviation; every golden mutation lands
# at least 10 tolerances out (tests_atlas/golden).
GOLDEN_REL = 3e-4
GOLDEN_REL_TRAINED = 1e-2


@dataclass(frozen=True)
class ExperimentSpec:
    """One experiment, declared once.

    ``run(ctx) -> result`` computes it; ``config(ctx) -> dict`` is what, beyond the model, families and
    profile, its stored record's config hash covers. ``statistics(result, n_layers, results) -> {name:
    Stat}`` turns its typed result into named statistics (``results``: every experiment's typed result in
    the run, for the statistics listed in ``reads``). ``section``/``overlay`` name the report's builders as
    ``"module:function"`` (imported only when a report is drawn); without them the report shows the
    experiment's statistics and their series.
    """

    name: str
    title: str
    about: str  # what the report section shows, one line
    run: Callable[..., Any]
    result: type
    order: int  # position in a run: an experiment runs after those it requires or reuses
    config: Callable[..., dict] | None = None
    requires: tuple[str, ...] = ()  # experiments whose artifacts it needs (computed first if absent)
    families: tuple[str, ...] = ()  # task families it needs loaded, with contrast prompts (checked before a run)
    reuses: tuple[str, ...] = ()  # experiments whose results it reuses when present (an identical computation)
    seed_dependent: bool = False  # repeated by --seeds
    # under --ray, runs whole on one Ray worker beside the driver's sharded sweeps (atlas_core.experiment_tasks):
    # its work is serial. A worker is sent the results it reads, never another experiment's artifacts (files in
    # the run folder, such as the trained adapter): an experiment that ``requires`` one stays on the driver
    on_worker: bool = False
    profile_fields: tuple[str, ...] = ()  # the Profile fields it reads (documentation and checks)
    knobs: tuple[Knob, ...] = ()  # settings of its own, by profile
    group: str | None = None  # the prefix of its statistics (``hub`` -> ``hub.top_layer``); None: no statistics
    statistics: Callable[..., dict] | None = None
    reads: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # statistic -> other experiments it reads
    finding: str | None = None  # what its finding tests check, in words (they are marked ``finding_<group>``)
    headline: bool = False  # one of the source study's six headline findings
    claims: tuple[str, ...] = ()  # statistics ``atlas claims write`` makes claims of (``x.*``: one per family)
    ranked: tuple[str, str] | None = None  # (ranking statistic, what it ranks by): rank claims of its top item
    section: str | None = None
    macro: str = "generic"  # the report template's macro for ``section``'s data
    overlay: str | None = None
    # every statistic ``statistics`` can compute, each declared once with what it is (name or name template,
    # unit, range, null, axis, ...): claims are checked against these names before any work, and hygiene,
    # claims writing, the report and the audit read their facts; empty: not declared, unchecked
    declares: tuple[StatDecl, ...] = ()
    # ``relayer(result, order) -> result``: the result as if layer i had measured what layer order[i] did,
    # every derived field (rankings, top layers, zones) recomputed from the arrays (the claims audit's
    # reversed and shuffled evidence); None: its result has no per-layer arrays
    relayer: Callable[..., Any] | None = None
    golden_rel: float = GOLDEN_REL  # the golden check's relative tolerance on this experiment's numbers
    golden_abs: float = 1e-6  # and its absolute floor on result fields

    @property
    def module(self) -> str:
        return self.run.__module__

    @property
    def marker(self) -> str | None:
        return f"finding_{self.group}" if self.group and self.finding else None

    def knob(self, name: str, profile: str) -> Any:
        for k in self.knobs:
            if k.name == name:
                return k.value(profile)
        raise AtlasError(
            f"experiment {self.name} declares no knob {name!r}; its knobs: "
            f"{', '.join(k.name for k in self.knobs) or 'none'}"
        )


@dataclass(frozen=True)
class HypothesisSpec:
    """One hypothesis, declared once: ``rule(small, large, thresholds) -> Verdict`` reads the two models'
    statistics (``{name: Stat}``) and the claims file's thresholds (defaults in ``thresholds``; every key
    not in ``optional`` must be present in a claims file's ``[thresholds.<id>]``)."""

    id: str  # H001, ..., H010, ...
    text: str  # the hypothesis in words
    experiments: tuple[str, ...]
    statistics: tuple[str, ...]  # what the rule reads, checked present for both models before it runs
    rule: Callable[..., Any]
    thresholds: Mapping[str, Any] = field(default_factory=dict)
    optional: tuple[str, ...] = ()  # thresholds a claims file may leave out
    evidence: tuple[str, ...] = ()  # statistics the report shows beside the verdict (default: ``statistics``)
    decisive: StatDecl | None = None  # what the rule's decisive number is (unit, range, null)
    boundaries: Callable[[Mapping], tuple[float, ...]] | None = None  # thresholds -> where the verdict changes
    # support means a change between the scales: two identical models are never supported (fully or
    # partially); False for hypotheses of sameness (H001, H004, H005), which the same model twice may support
    scaling: bool = False

    def __post_init__(self):
        if not _HID.fullmatch(self.id):
            raise AtlasError(f"hypothesis id {self.id!r} must be H followed by three or more digits (H009)")

    @property
    def marker(self) -> str:
        return self.id.lower()

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(k for k in self.thresholds if k not in self.optional)

    @property
    def shown(self) -> tuple[str, ...]:
        return self.evidence or self.statistics


# ----------------------------------------------------------------------------------------------
# registries


@dataclass
class _Registry:
    kind: str  # "experiment" | "hypothesis"
    package: str
    extra: dict[str, tuple[Any, str]] = field(default_factory=dict)  # registered: key -> (spec, where)

    @cached_property
    def _found(self) -> dict[str, tuple[Any, str]]:
        found: dict[str, tuple[Any, str]] = {}
        pkg = importlib.import_module(self.package)
        for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
            mod = importlib.import_module(f"{self.package}.{info.name}")
            if hasattr(mod, "SPEC"):
                self._add(found, mod.SPEC, mod.__name__)
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUPS[self.kind]):
            try:
                obj = ep.load()
            except Exception as exc:  # a broken plugin package: say which, do not hide it
                raise AtlasError(
                    f"entry point {ep.name} = {ep.value} ({ENTRY_POINT_GROUPS[self.kind]}) failed to "
                    f"load: {exc}; fix or uninstall the package that declares it"
                ) from exc
            self._add(found, obj.SPEC if isinstance(obj, ModuleType) else obj, f"entry point {ep.value}")
        return found

    def _add(self, into: dict, spec: Any, where: str) -> None:
        want = ExperimentSpec if self.kind == "experiment" else HypothesisSpec
        if not isinstance(spec, want):
            raise AtlasError(f"{where}: SPEC is a {type(spec).__name__}, not an {want.__name__}")
        key = spec.name if self.kind == "experiment" else spec.id
        if key in into and into[key][1] != where:
            raise AtlasError(f"{self.kind} {key} is declared twice: in {into[key][1]} and in {where}; rename one")
        into[key] = (spec, where)

    def all(self) -> dict[str, Any]:
        merged = dict(self._found)
        for spec, where in self.extra.values():
            self._add(merged, spec, where)
        return {k: s for k, (s, _) in merged.items()}


_EXPERIMENTS = _Registry("experiment", "atlas_core.experiments")
_HYPOTHESES = _Registry("hypothesis", "atlas_core.hypotheses")
_CHECKED: dict[str, dict] = {}  # the checked, ordered registries; cleared whenever a registration changes


def register(specs: Iterable[ExperimentSpec | HypothesisSpec], where: str = "register()") -> None:
    """Add specs declared outside this package (a project's conftest, through the plugin's hooks)."""
    for spec in specs:
        reg = _EXPERIMENTS if isinstance(spec, ExperimentSpec) else _HYPOTHESES
        key = spec.name if isinstance(spec, ExperimentSpec) else getattr(spec, "id", None)
        reg._add(reg.extra, spec, where)
        try:  # a clash with a built-in or installed spec, or an experiment out of order: refused, not kept
            merged = reg.all()
            if reg is _EXPERIMENTS:
                _check_experiments(_ordered(merged))
        except AtlasError:
            reg.extra.pop(key, None)
            raise
        finally:
            _CHECKED.clear()


def unregister(keys: Iterable[str]) -> None:
    """Remove specs added with :func:`register` (tests, and a plugin at session end)."""
    for key in keys:
        _EXPERIMENTS.extra.pop(key, None)
        _HYPOTHESES.extra.pop(key, None)
    _CHECKED.clear()


def _ordered(specs: Mapping[str, ExperimentSpec]) -> dict[str, ExperimentSpec]:
    return dict(sorted(specs.items(), key=lambda kv: (kv[1].order, kv[0])))


def _check_experiments(specs: Mapping[str, ExperimentSpec]) -> None:
    from dataclasses import fields

    from atlas_core.profiles import Profile

    order = list(specs)
    profile_fields = {f.name for f in fields(Profile)}
    for s in specs.values():
        unknown = [f for f in s.profile_fields if f not in profile_fields]
        if unknown:
            raise AtlasError(
                f"experiment {s.name} reads profile field(s) {', '.join(unknown)}, which Profile lacks "
                f"({', '.join(sorted(profile_fields))}); declare a setting of its own as a Knob"
            )
        for dep in s.requires + s.reuses + tuple(x for r in s.reads.values() for x in r):
            if dep not in specs:
                raise AtlasError(
                    f"experiment {s.name} names {dep!r}, which is not a known experiment ({', '.join(order)})"
                )
        if s.on_worker and s.requires:
            raise AtlasError(
                f"experiment {s.name} runs on a Ray worker (on_worker=True) and requires the artifacts of "
                f"{', '.join(s.requires)}, which a worker is not sent: declare on_worker=False (it then runs on the "
                "driver, whose sweeps the workers still share)"
            )
        for dep in s.requires + s.reuses:
            if order.index(dep) > order.index(s.name):
                raise AtlasError(
                    f"experiment {s.name} (order {s.order}) needs {dep} (order {specs[dep].order}) "
                    "to run first: give it a larger order"
                )


def experiments() -> dict[str, ExperimentSpec]:
    """Every experiment, in run order (artifacts flow forward)."""
    if "experiments" not in _CHECKED:
        specs = _ordered(_EXPERIMENTS.all())
        _check_experiments(specs)
        _CHECKED["experiments"] = specs
    return dict(_CHECKED["experiments"])


def hypotheses() -> dict[str, HypothesisSpec]:
    """Every hypothesis, by id."""
    if "hypotheses" not in _CHECKED:
        hyps = _HYPOTHESES.all()
        exps = experiments()
        for h in hyps.values():
            bad = [e for e in h.experiments if e not in exps]
            if bad:
                raise AtlasError(
                    f"hypothesis {h.id} reads unknown experiment(s) {', '.join(bad)}; known: {', '.join(exps)}"
                )
        _CHECKED["hypotheses"] = dict(sorted(hyps.items(), key=lambda kv: int(kv[0][1:])))
    return dict(_CHECKED["hypotheses"])


def experiment(name: str) -> ExperimentSpec:
    specs = experiments()
    if name not in specs:
        raise AtlasError(f"unknown experiment {name!r}; choose from: all, {', '.join(specs)}")
    return specs[name]


def hypothesis(hid: str) -> HypothesisSpec:
    hyps = hypotheses()
    if hid not in hyps:
        raise AtlasError(f"unknown hypothesis {hid!r}; hypotheses are {', '.join(hyps)}")
    return hyps[hid]


# ----------------------------------------------------------------------------------------------
# derived tables


def groups() -> dict[str, ExperimentSpec]:
    """Statistic group (``hub``) -> the experiment whose statistics carry it."""
    return {s.group: s for s in experiments().values() if s.group}


def finding_markers() -> dict[str, str]:
    """``finding_<group>`` -> the finding in words, for experiments with finding tests."""
    return {s.marker: s.finding for s in experiments().values() if s.marker}


def hypothesis_markers() -> dict[str, str]:
    return {h.marker: f"{h.id} {h.text}" for h in hypotheses().values()}


def default_thresholds() -> dict[str, dict[str, Any]]:
    return {h.id: dict(h.thresholds) for h in hypotheses().values()}


@cache
def _pattern(declared: str) -> re.Pattern:
    parts = re.split(r"(\{family\}|\*)", declared)
    rx = "".join(
        "(?P<family>[A-Za-z0-9_-]+)" if p == "{family}" else "[^.]+" if p == "*" else re.escape(p) for p in parts
    )
    return re.compile(rx)


def statistic_family(name: str) -> str | None:
    """The task family a declared statistic names (``hub.family_kl.copying`` -> ``copying``; None when it names
    none). A statistic its experiment does not declare is an AtlasError listing the ones it does, before any
    experiment runs (a typo would otherwise surface as "n/a" after the experiment)."""
    head = name.split(".")[0]
    if head in hypotheses():
        return None
    statistic_experiments(name)  # an unknown group is an error naming the groups
    spec = groups()[head]
    if not spec.declares:
        return None
    for decl in spec.declares:
        m = decl.match(name)
        if m:
            return m.groupdict().get("family")
    raise AtlasError(
        f"unknown statistic {name!r}: the {spec.name} experiment computes "
        f"{', '.join(d.name for d in spec.declares)} ({{family}}: a task family's name)"
    )


def statistic_experiments(name: str) -> tuple[str, ...]:
    """The experiments a statistic (``hub.top_layer_kl``) or hypothesis (``H003``, ``H003.ratio``) reads."""
    head = name.split(".")[0]
    hyps = hypotheses()
    if head in hyps:
        return hyps[head].experiments
    g = groups()
    if head not in g:
        raise AtlasError(f"unknown statistic {name!r}: it must start with one of {', '.join(list(g) + list(hyps))}")
    return (g[head].name,) + tuple(g[head].reads.get(name, ()))


def declaration(name: str) -> StatDecl | None:
    """The declaration of statistic ``name`` (``hub.top_layer_kl``) or of hypothesis ``H003``'s decisive
    number (``H003``, ``H003.statistic``); None when nothing declares it."""
    head = name.split(".")[0]
    hyps = hypotheses()
    if head in hyps:
        return hyps[head].decisive
    spec = groups().get(head)
    if spec is None:
        return None
    return next((d for d in spec.declares if d.matches(name)), None)


def resolve(ref: str) -> Callable:
    """A ``"module:function"`` reference (a spec's report builders)."""
    mod, _, attr = ref.partition(":")
    try:
        return getattr(importlib.import_module(mod), attr)
    except (ImportError, AttributeError) as exc:
        raise AtlasError(
            f"cannot resolve {ref!r}: {exc}; a spec names its builder as 'package.module:function'"
        ) from None
