"""The plugin's options (``--atlas-*``, checked once at start), its tiers and its markers (the package's
docstring lists them)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

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


TIERS = {
    t.name: t
    for t in (
        Tier(
            "default",
            (),
            "full",
            True,
            "unit and property tests, Coder-0.5B real-model tests and the golden check, "
            "the hypothesis and finding suite against the committed full-profile Coder baselines (no recompute), reports",
        ),
        Tier(
            "pair",
            ("pair",),
            "ci",
            False,
            "the hypothesis and finding suite recomputed at the ci profile for both "
            "Coder models (coder-pair-ci.toml), and the tests marked pair",
            claims=True,
        ),
        Tier("slow", ("slow",), DEFAULT_PROFILE, False, "benchmarks and other tests that take minutes"),
    )
}
ALL_CLAIMS = "atlas_claims"  # a claims test over every claim, whatever its group (a user's own claims file)
BASE_MARKERS = {
    "real_model": "loads a real pretrained model through the project's own fetch (runs on CPU in CI)",
    "gpu": "needs a CUDA device; skipped where none exists",
    "slow": "the slow tier: takes minutes on a 2-core CPU (benchmarks); run with --atlas-tier slow or -m slow",
    "pair": "the pair tier: recomputes the Coder pair at the ci profile; run with --atlas-tier pair",
}
GROUPS = pytest.StashKey[dict]()  # marker -> what it selects, for the claims-test markers (from the specs)


def group_markers() -> dict[str, str]:
    """The markers that select claims tests, from the specs: ``h003`` per hypothesis, ``finding_hub`` per
    experiment with finding tests."""
    from atlas_core.spec import finding_markers, hypothesis_markers

    return {
        **hypothesis_markers(),
        **finding_markers(),
        ALL_CLAIMS: "a claims test (argument claim) over every claim of the session's claims files, whatever "
        "its statistic (clean.accuracy.<family> included)",
    }


def in_tier(item, tier: Tier) -> bool:
    """Whether the tier selects ``item``: its markers, and every claims test where the tier takes them."""
    if tier.markers:
        groups = tuple(item.config.stash[GROUPS]) if tier.claims else ()
        return any(item.get_closest_marker(m) for m in tier.markers + groups)
    return not any(item.get_closest_marker(m) for t in TIERS.values() for m in t.markers)


def pytest_addoption(parser):
    g = parser.getgroup("atlas", "Atlas hypothesis suite")
    g.addoption(
        "--atlas-tier",
        default="default",
        choices=tuple(TIERS),
        help="test tier: " + "; ".join(f"{t.name}: {t.about}" for t in TIERS.values()),
    )
    g.addoption(
        "--atlas-model",
        default=None,
        metavar="NAME",
        help="model under test: registered name, local folder, hub id or .gguf (its finding claims; "
        "the regression candidate)",
    )
    g.addoption(
        "--atlas-pair",
        nargs=2,
        default=None,
        metavar=("SMALL", "LARGE"),
        help=f"model pair for the hypotheses, small then large (default: {' '.join(DEFAULT_PAIR)})",
    )
    g.addoption("--atlas-profile", default=None, help=f"smoke | ci | full | exhaustive (default {DEFAULT_PROFILE})")
    g.addoption("--atlas-device", default=None, help="cpu | cuda | cuda:N (default: cuda if present)")
    g.addoption(
        "--atlas-ray",
        nargs="?",
        const="local",
        default=None,
        metavar="ADDRESS",
        help="compute missing results with sweeps sharded over Ray actors (atlas run --ray): ADDRESS of "
        "a cluster, or none to start a local one",
    )
    g.addoption(
        "--atlas-claims",
        action="append",
        default=None,
        metavar="FILE",
        help="claims file (repeatable; default: every shipped claims file, each claim run "
        "only for its own models and profile)",
    )
    g.addoption(
        "--atlas-tasks",
        default=None,
        metavar="DIR",
        help="a folder of <family>.json task files (the built-in families' format), added to the built-in families",
    )
    g.addoption("--atlas-runs", default="reports/runs", metavar="DIR", help="run store (default reports/runs)")
    g.addoption(
        "--atlas-baselines",
        default=None,
        metavar="DIR",
        help="committed baseline records that seed an empty run store (default: the shipped ones; "
        "'none' to compute everything)",
    )
    g.addoption(
        "--atlas-baseline",
        default=None,
        metavar="RUN_DIR",
        help="regression: check every finding of --atlas-model against this stored run",
    )
    g.addoption(
        "--atlas-screen",
        default=None,
        metavar="METHOD",
        help="compute missing head ablations screened by attribution patching (atp), then verified by exact "
        "ablation (atlas run --screen); default: the exhaustive sweep",
    )
    g.addoption(
        "--atlas-no-compute",
        action="store_true",
        default=False,
        help="stored results only: fail a test whose experiment has no matching stored result instead of computing it",
    )


def validate_options(config) -> None:
    """The --atlas-* values that can be wrong, checked once at start: a bad one is a usage error naming it,
    not a failure in every test that needs it."""
    from atlas_core import AtlasError
    from atlas_core.models.loader import check_model_source, resolve_device
    from atlas_core.preflight import check_model_name, check_writable_dir

    opt = config.getoption
    checks = [("--atlas-device", lambda: resolve_device(opt("atlas_device")))]
    models = [opt("atlas_model")] + list(opt("atlas_pair") or [])
    for m in filter(None, models):
        checks.append((f"--atlas-model/--atlas-pair {m}", lambda m=m: (check_model_name(m), check_model_source(m))))
    runs = Path(opt("atlas_runs")).expanduser()
    checks.append(
        (
            "--atlas-runs",
            lambda: check_writable_dir(runs if runs.is_absolute() else config.rootpath / runs, "the run store"),
        )
    )
    seeds = opt("atlas_baselines")
    if seeds not in (None, "none") and not Path(seeds).expanduser().is_dir():
        raise pytest.UsageError(
            f"--atlas-baselines {seeds}: no such folder; pass the folder of committed baselines "
            "(atlas_core/data/baselines) or 'none'"
        )
    if opt("atlas_tasks"):
        from atlas_core.tasks import load_families

        checks.append(("--atlas-tasks", lambda: load_families(user_dir=opt("atlas_tasks"))))
    screen = opt("atlas_screen")
    if screen is not None:
        from atlas_core.screening import SCREENS

        if screen not in SCREENS:
            raise pytest.UsageError(
                f"--atlas-screen {screen}: unknown method; methods are {', '.join(SCREENS)} (omit "
                "it for the exhaustive sweep)"
            )
    for path in opt("atlas_claims") or []:
        if not Path(path).expanduser().is_file():
            raise pytest.UsageError(
                f"--atlas-claims {path}: no such file; pass a claims file (a TOML file like atlas_core/data/claims/*.toml)"
            )
    for what, check in checks:
        try:
            check()
        except AtlasError as exc:
            raise pytest.UsageError(f"{what}: {exc}") from None
