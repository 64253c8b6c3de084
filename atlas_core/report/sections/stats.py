"""The finding statistics and hypotheses of a run (computed by ``atlas_core.verdicts``, the numbers claims
read), and the generic section of an experiment that names no builder."""

from __future__ import annotations

from atlas_core.report import plots
from atlas_core.report.data import Est, ReportedRun, derived
from atlas_core.spec import declaration, experiments, hypotheses


EXTRA_STATS = ("clean.accuracy", "lora.final_loss")


def statistics(run: ReportedRun) -> dict:
    """The run's finding statistics (name -> verdicts.Stat), ``{}`` when the run does not say its depth."""
    return {} if run.n_layers is None else run.stats


def stat_kind(name: str) -> str:
    """The number format of statistic ``name``, from its declared unit (``StatDecl.fmt``)."""
    d = declaration(name)
    return "auto" if d is None else d.fmt


def stat_view(run: ReportedRun, name: str, stat) -> dict:
    """One statistic as Nums (derived: recomputable with ``verdicts.model_statistics``)."""
    kind = "auto" if stat.kind == "index" else stat_kind(name)
    how = f"atlas_core.verdicts.model_statistics: {name}"
    value = int(stat.value) if stat.kind in ("index", "ranking") and stat.value is not None else stat.value
    v = derived(value, how, kind=kind, run=run.label)
    est = None
    if stat.lo is not None and stat.hi is not None:
        est = Est(
            v,
            derived(stat.lo, how + " (lo)", kind=kind, run=run.label),
            derived(stat.hi, how + " (hi)", kind=kind, run=run.label),
            stat.n,
        )
    return {"name": name, "value": v, "est": est, "label": stat.label or "", "kind": stat.kind}


def hypothesis_rows(run: ReportedRun) -> list[dict]:
    stats = statistics(run)
    rows = []
    for hid, text, study, marker in hypothesis_table():
        shown = hypotheses()[hid].shown
        ev = [stat_view(run, n, stats[n]) for n in shown if n in stats and stats[n].value is not None]
        rows.append({"id": hid, "text": text, "study": study, "marker": marker, "evidence": ev})
    return rows


def generic(run: ReportedRun, key: str) -> dict | None:
    """The section of an experiment that names no builder: its statistics, and a plot of each series."""
    if not run.has(key):
        return None
    spec = experiments()[key]
    stats = {n: st for n, st in statistics(run).items() if spec.group and n.startswith(spec.group + ".")}
    figs = []
    for name, st in stats.items():
        ser = st.series
        if ser and ser.get("x") and any(v is not None for v in ser.get("y", [])):
            figs.append(
                plots.lines(
                    [{"name": name, "x": ser["x"], "y": ser["y"], "color": plots.RUN_COLORS[0]}],
                    ser["xlabel"],
                    ser["ylabel"],
                    name,
                )
            )
    rows = [stat_view(run, n, st) for n, st in stats.items() if st.value is not None]
    return {"stats": rows, "plots": figs, "notes": getattr(run.typed(key), "notes", "")}


def hypothesis_table() -> tuple[tuple[str, str, str, str], ...]:
    """(id, wording, the source study's published status (its data file), marker) of every hypothesis."""
    from atlas_core.report.study import load_study

    status = load_study().paper.get("status", {})
    return tuple((h.id, h.text, status.get(h.id, "—"), h.marker) for h in hypotheses().values())
