"""The nine experiments of the study (plus the clean baseline), one module each.

Each module declares ``SPEC = ExperimentSpec(...)`` (:mod:`atlas_core.spec`): its name, what it
requires, its ``run(ctx) -> result``, its result type, its statistics and its report section. The
registry in :mod:`atlas_core.spec` finds them; nothing here lists them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from atlas_core import AtlasError

if TYPE_CHECKING:
    from atlas_core.experiments.context import Context
    from atlas_core.spec import ExperimentSpec


def parse_experiments(selection: str | list[str] | tuple[str, ...]) -> list[str]:
    """``all`` or a comma list, in run order; unknown names are an error that lists the known ones."""
    from atlas_core.spec import experiments

    known = list(experiments())
    names = (
        known
        if selection in ("all", ["all"], ("all",))
        else ([s.strip() for s in selection.split(",") if s.strip()] if isinstance(selection, str) else list(selection))
    )
    if not names:
        raise AtlasError(f"no experiments selected; choose from: all, {', '.join(known)}")
    unknown = [n for n in names if n not in known]
    if unknown:
        raise AtlasError(f"unknown experiment(s) {', '.join(unknown)}; choose from: all, {', '.join(known)}")
    return [n for n in known if n in names]  # run order: artifacts flow forward


def run_experiment(spec: ExperimentSpec, ctx: Context, results: Mapping[str, Any]) -> Any:
    """Run ``spec`` on ``ctx`` with the results it declares it reads (``requires`` and ``reuses``) taken from
    ``results`` (experiment -> typed result) and nothing else; returns its result, which the caller keeps."""
    ctx.results = {name: results[name] for name in spec.requires + spec.reuses if name in results}
    try:
        return spec.run(ctx)
    finally:
        ctx.results = {}
