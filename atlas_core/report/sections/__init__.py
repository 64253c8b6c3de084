"""The sections of one run's atlas: each builder turns a stored result, read as its typed result, into what the
template shows (tables of :class:`~atlas_core.report.data.Num` and inline SVG plots), or ``None`` when the run
does not hold that experiment (the page then says "not run"). An experiment's spec names its builder
(``ExperimentSpec.section``); one module per group of experiments holds them."""

from __future__ import annotations

from typing import Callable

from atlas_core.report.data import ReportedRun
from atlas_core.report.sections.common import TOP_K, UNFIT_ROWS
from atlas_core.report.sections.model import model_card
from atlas_core.report.sections.stats import (
    generic,
    hypothesis_rows,
    hypothesis_table,
    stat_kind,
    stat_view,
    statistics,
)
from atlas_core.spec import experiments, hypotheses, resolve

__all__ = [
    "TOP_K",
    "UNFIT_ROWS",
    "builder",
    "generic",
    "hypothesis_rows",
    "hypothesis_table",
    "macro",
    "model_card",
    "sections",
    "stat_kind",
    "stat_view",
    "statistics",
]


def sections() -> tuple[tuple[str, str | None, str, str], ...]:
    """(section id, experiment key, title, what it shows) of a run's page: the model card, one section
    per experiment (from its spec, in run order), the hypotheses."""
    exps = experiments().values()
    hids = list(hypotheses())
    span = f"{hids[0]}–{hids[-1]}" if hids else "the hypotheses"
    return (
        ("model", None, "Model card", "the model, its weights, the run's profile, versions and wall times"),
        *((e.name, e.name, e.title, e.about) for e in exps),
        ("hypotheses", None, "Hypotheses", f"{span}: the evidence, and the verdict where two models are compared"),
    )


def macro(sid: str) -> str:
    """The template macro that draws section ``sid`` (``_macros.html``)."""
    spec = experiments().get(sid)
    return "model" if sid == "model" else (spec.macro if spec and spec.section else "generic")


def builder(key: str) -> Callable[[ReportedRun], dict | None]:
    """The section builder an experiment's spec names (the generic statistics section without one)."""
    spec = experiments()[key]
    return resolve(spec.section) if spec.section else (lambda run: generic(run, key))
