"""The Atlas pytest plugin: options, tiers, claims-driven parametrization, the run-store session (the
``atlas`` fixture) and the hook-leak guard.

Installing atlas-interp registers it (the ``pytest11`` entry point ``atlas_core.pytest_plugin``, named after
the module so that ``-p atlas_core.pytest_plugin`` and the entry point are one registration, never two).
That module is the plugin object: it imports every hook implementation and fixture from the modules of this
package, which are never registered themselves (each hook runs once)::

    options       the options, the tiers and the markers
    session       the run-store session (``AtlasSession``, the ``atlas`` fixture), configure, terminal summary
    binding       claims-driven parametrization (``pytest_generate_tests``) and tier selection
    drift         the regression check of ``--atlas-baseline`` (the ``drift`` parameter)
    leak_guard    the hook-leak guard (an autouse fixture)
    registration  the project's own experiment and hypothesis specs, through the hooks of ``hookspecs``

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
    --atlas-screen METHOD       compute missing head ablations screened (atp: attribution patching, then
                                exact ablation of the layers that could hold the top heads; atlas run --screen)
    --atlas-no-compute          stored results only: a test whose experiment has no stored (or seeded)
                                result matching this code and these weights fails, naming it, instead
                                of computing it (a stale baseline fails in seconds, not after hours)

Hypothesis and finding tests take a ``claim`` argument; ``pytest_generate_tests`` parametrizes it
with the claims whose group matches the test's marker (``h003`` -> claims on H003, ``finding_hub``
-> ``hub.*`` claims, ``atlas_claims`` -> every claim: what a project checking its own claims file
uses). The ``atlas`` session fixture computes, through ``orchestrate.run_plan`` and the run store, only
the experiments the selected (not deselected, not skipped) tests need, once per session per model,
reusing stored results whose config hash matches.

This repository's own model fixtures (``tiny``, ``coder05``, ...) live in its root ``conftest.py``.
"""
