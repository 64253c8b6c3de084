"""Plots for the HTML atlas: matplotlib (Agg, no pyplot state) rendered to inline SVG.

Each function returns ``Markup`` holding one ``<svg>`` element ready to drop into a page: no XML
declaration, no DOCTYPE, no metadata block and no namespace URLs (HTML5 puts inline ``<svg>`` in the
SVG namespace by itself), ``href`` instead of ``xlink:href``; so the page holds no external URL at all.
Text stays text (``svg.fonttype = none``): smaller files, selectable labels. Element ids get a salt per
figure so several figures in one page never share an id. Non-finite values (stored as JSON ``null``)
are drawn as gaps.
"""

from __future__ import annotations

import io
import itertools
import re
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # before anything draws; reports never open windows

import numpy as np
from markupsafe import Markup
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

_COUNTER = itertools.count()
RUN_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
STYLE = {
    "font.size": 9,
    "axes.titlesize": 9.5,
    "axes.labelsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e6e6e6",
    "grid.linewidth": 0.6,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "svg.fonttype": "none",
    "figure.dpi": 100,
}


def arr(values) -> np.ndarray:
    """A float array with JSON ``null`` as NaN."""
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def matrix(rows) -> np.ndarray:
    return np.array([arr(r) for r in rows], dtype=np.float64) if len(rows) else np.zeros((0, 0))


def to_svg(fig: Figure, css_class: str = "plot", label: str = "") -> Markup:
    """Render ``fig`` as one clean inline ``<svg>`` (see the module docstring)."""
    salt = f"f{next(_COUNTER)}"
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": salt, "svg.fonttype": "none"}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    text = buf.getvalue()
    text = text[text.index("<svg") :]
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)
    text = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", text)
    text = text.replace("xlink:href=", "href=")
    # keep the drawing's aspect, let CSS size it; ids are already unique (salted)
    m = re.match(r'<svg([^>]*?)\swidth="([\d.]+)pt"\s+height="([\d.]+)pt"', text)
    if m:
        w = float(m.group(2))  # the height follows from the aspect
        text = (
            f'<svg class="{css_class}" role="img" aria-label="{_attr(label)}" '
            f'style="max-width:{w * 4 / 3 * 1.3:.0f}px"' + m.group(1) + text[m.end() :]
        )
    return Markup(text.strip())


def _attr(s: str) -> str:
    return s.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")


def _figure(w: float, h: float) -> Figure:
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(w, h), layout="constrained")
    return fig


class Lazy:
    """A plot drawn only when a page outputs it (``__html__``/``str``): a template that leaves a plot
    out (the compact columns of a comparison) costs no drawing."""

    def __init__(self, fn, args, kwargs):
        self._fn, self._args, self._kwargs, self._svg = fn, args, kwargs, None

    def render(self) -> Markup:
        if self._svg is None:
            with matplotlib.rc_context(STYLE):
                self._svg = self._fn(*self._args, **self._kwargs)
        return self._svg

    def __html__(self) -> str:
        return self.render()

    def __str__(self) -> str:
        return str(self.render())


def _styled(fn):
    """Plot functions return a :class:`Lazy` drawn in the house style when first output."""

    def wrapper(*args, **kwargs) -> Lazy:
        return Lazy(fn, args, kwargs)

    wrapper.__name__, wrapper.__doc__ = fn.__name__, fn.__doc__
    wrapper.draw = fn  # the eager function
    return wrapper


def _plain_y(ax) -> None:
    """Log-axis ticks as plain numbers (0.01, 1, 100), not 10^k."""
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _yerr(values, lo, hi):
    v, lo, hi = arr(values), arr(lo), arr(hi)
    return np.vstack([np.clip(v - lo, 0, None), np.clip(hi - v, 0, None)])


@_styled
def bars(
    labels: Sequence[str],
    series: Sequence[dict],
    ylabel: str,
    title: str = "",
    ylim: tuple[float, float] | None = None,
    log: bool = False,
) -> Markup:
    """Grouped bars, one group per label; each series ``{"name", "values", "lo"?, "hi"?}`` (error bars
    from the interval when given)."""
    n = max(len(series), 1)
    fig = _figure(max(4.0, 0.55 * len(labels) * (0.6 + 0.4 * n)) if len(labels) > 6 else 5.0, 2.6)
    ax = fig.add_subplot()
    x = np.arange(len(labels))
    width = 0.8 / n
    for i, s in enumerate(series):
        vals = arr(s["values"])
        err = _yerr(s["values"], s["lo"], s["hi"]) if s.get("lo") is not None else None
        ax.bar(
            x + (i - (n - 1) / 2) * width,
            np.nan_to_num(vals),
            width * 0.92,
            yerr=err,
            color=s.get("color", RUN_COLORS[i % len(RUN_COLORS)]),
            label=s["name"] if n > 1 else None,
            error_kw={"elinewidth": 0.8, "capsize": 2, "ecolor": "#333"},
        )
    ax.set_xticks(x, labels, rotation=30 if len(labels) > 4 else 0, ha="right" if len(labels) > 4 else "center")
    ax.set_ylabel(ylabel)
    ax.grid(axis="x", visible=False)
    if log:
        ax.set_yscale("log")
        _plain_y(ax)
    if ylim:
        ax.set_ylim(*ylim)
    if title:
        ax.set_title(title)
    if n > 1:  # above the axes: inside, "best" still covers bars that reach the top (accuracies of 1)
        fig.legend(loc="outside upper center", ncol=min(n, 3))
    return to_svg(fig, label=title or ylabel)


@_styled
def heatmaps(
    panels: Sequence[dict],
    xlabel: str,
    ylabel: str,
    cbar_label: str,
    ncols: int | None = None,
    shared_scale: bool = True,
    panel_w: float = 3.6,
    panel_h: float | None = None,
    log: bool = False,
    title: str = "",
    diverging: bool = False,
) -> Markup:
    """Side-by-side heatmaps. Each panel ``{"title", "z" (rows x cols), "x" (column labels),
    "y" (row labels)}``; one colour scale for all panels when ``shared_scale`` (so they compare);
    ``diverging``: a signed quantity, blue below zero and red above, zero white."""
    k = len(panels)
    ncols = ncols or k
    nrows = -(-k // ncols)
    zs = [matrix(p["z"]) if p.get("z") is not None else np.full((0, 0), np.nan) for p in panels]
    finite = np.concatenate([z[np.isfinite(z)].ravel() for z in zs]) if zs else np.zeros(0)
    rows = max((len(p["y"]) for p in panels), default=1)
    panel_h = panel_h or min(3.2, max(1.4, 0.16 * rows + 0.9))
    fig = _figure(panel_w * ncols + 0.9, panel_h * nrows + (0.3 if title else 0))
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey="row")
    norm = None
    if shared_scale and finite.size:
        norm = _norm(finite, log, diverging)
    im = None
    for idx, (ax, p, z) in enumerate(zip(axes.ravel(), panels, zs)):
        if z.size == 0:  # this run lacks the panel: say so, draw nothing
            ax.set_title(p["title"])
            ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes, color="#888")
            ax.set_axis_off()
            continue
        pnorm = norm or (_norm(z[np.isfinite(z)], log, diverging) if np.isfinite(z).any() else None)
        im = ax.imshow(
            np.ma.masked_invalid(z),
            aspect="auto",
            interpolation="nearest",
            cmap="RdBu_r" if diverging else "magma_r",
            norm=pnorm,
        )
        ax.set_title(p["title"])
        ax.grid(False)
        _ticks(ax.set_xticks, p["x"], max_labels=max(3, int(panel_w * 2.4)))
        if idx % ncols == 0:
            _ticks(ax.set_yticks, p["y"], max_labels=max(3, int((panel_h - 0.8) / 0.14)))  # ~0.14 in a label
            ax.set_ylabel(ylabel)
        ax.set_xlabel(xlabel)
        if not shared_scale:
            _plain_cbar(fig.colorbar(im, ax=ax, shrink=0.9, label=cbar_label))
    for ax in axes.ravel()[k:]:
        ax.set_visible(False)
    if shared_scale and im is not None:
        _plain_cbar(fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.9, label=cbar_label))
    if title:
        fig.suptitle(title)
    return to_svg(fig, label=title or cbar_label)


def _plain_cbar(cb) -> None:
    cb.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    cb.ax.yaxis.set_minor_formatter(NullFormatter())


def _norm(values: np.ndarray, log: bool, diverging: bool = False):
    if values.size == 0:
        return None
    if diverging:
        m = float(np.max(np.abs(values))) or 1e-9
        return Normalize(vmin=-m, vmax=m)
    if log:
        pos = values[values > 0]
        if pos.size:
            return LogNorm(vmin=max(pos.min(), pos.max() * 1e-4), vmax=pos.max())
    lo, hi = float(np.min(values)), float(np.max(values))
    return Normalize(vmin=min(lo, 0.0), vmax=hi if hi > min(lo, 0.0) else min(lo, 0.0) + 1e-9)


def _ticks(setter, labels: Sequence, max_labels: int) -> None:
    n = len(labels)
    step = max(1, -(-n // max_labels))
    idx = list(range(0, n, step))
    setter(idx, [str(labels[i]) for i in idx])


@_styled
def lines(
    series: Sequence[dict],
    xlabel: str,
    ylabel: str,
    title: str = "",
    yscale: str = "linear",
    hlines: Sequence[tuple[float, str]] = (),
    vspans: Sequence[tuple[float, float, str]] = (),
    xlim: tuple[float, float] | None = None,
    width: float = 5.6,
    height: float = 2.8,
    legend_out: bool = False,
    markers: bool = True,
) -> Markup:
    """Line plot. Each series ``{"name", "x", "y", "lo"?, "hi"?, "color"?, "style"?}``; a shaded band
    where an interval is given. ``yscale``: linear | log | symlog."""
    fig = _figure(width, height)
    ax = fig.add_subplot()
    for i, s in enumerate(series):
        x, y = arr(s["x"]), arr(s["y"])
        color = s.get("color", RUN_COLORS[i % len(RUN_COLORS)])
        ax.plot(
            x,
            y,
            s.get("style", "-"),
            color=color,
            lw=s.get("lw", 1.4),
            label=s.get("name"),
            marker="o" if markers and len(x) <= 40 else None,
            ms=2.6,
        )
        if s.get("lo") is not None and s.get("hi") is not None:
            ax.fill_between(x, arr(s["lo"]), arr(s["hi"]), color=color, alpha=0.15, lw=0)
    for y, label in hlines:
        ax.axhline(y, color="#555", lw=0.8, ls="--")
        if label:
            ax.annotate(
                label, (1, y), xycoords=("axes fraction", "data"), ha="right", va="bottom", fontsize=7.5, color="#555"
            )
    for a, b, label in vspans:
        ax.axvspan(a, b, color="#2ca02c", alpha=0.10, lw=0, label=label or None)
    if yscale == "symlog":
        ys = np.concatenate([arr(s["y"]) for s in series]) if series else np.zeros(0)
        ys = np.abs(ys[np.isfinite(ys) & (ys != 0)])
        ax.set_yscale("symlog", linthresh=float(np.percentile(ys, 25)) if ys.size else 1.0)
        _plain_y(ax)
    elif yscale == "log":
        ax.set_yscale("log")
        ys = np.concatenate([arr(s["y"]) for s in series]) if series else np.zeros(0)
        ys = ys[np.isfinite(ys) & (ys > 0)]
        decades = np.log10(ys.max() / ys.min()) if ys.size else 0.0
        ax.yaxis.set_major_locator(
            LogLocator(base=10, subs=(1.0, 2.0, 5.0)) if decades <= 2 else LogLocator(base=10, numticks=8)
        )
        _plain_y(ax)
    if xlim:
        ax.set_xlim(*xlim)
    elif vspans:  # keep the axis on the data, not on the shaded band
        xs = np.concatenate([arr(s["x"]) for s in series]) if series else np.zeros(0)
        xs = xs[np.isfinite(xs)]
        if xs.size:
            ax.set_xlim(xs.min() - 0.5, xs.max() + 0.5)
    if "layer" in xlabel and "depth" not in xlabel:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if any(s.get("name") for s in series) or any(v[2] for v in vspans):
        if legend_out:
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
        else:
            ax.legend(loc="best")
    return to_svg(fig, label=title or ylabel)


@_styled
def scatter(
    groups: Sequence[dict], xlabel: str, ylabel: str, title: str = "", width: float = 4.6, height: float = 3.0
) -> Markup:
    """Scatter; each group ``{"name", "x", "y", "labels"?, "color"?}`` (point labels annotate points; an
    empty label leaves its point unlabelled)."""
    fig = _figure(width, height)
    ax = fig.add_subplot()
    for i, g in enumerate(groups):
        x, y = arr(g["x"]), arr(g["y"])
        color = g.get("color", RUN_COLORS[i % len(RUN_COLORS)])
        ax.scatter(x, y, s=18, color=color, label=g.get("name"), zorder=3)
        for xi, yi, lab in zip(x, y, g.get("labels") or []):
            if lab != "" and np.isfinite(xi) and np.isfinite(yi):
                ax.annotate(str(lab), (xi, yi), xytext=(3, 2), textcoords="offset points", fontsize=6.5, color="#444")
        ok = np.isfinite(x) & np.isfinite(y)
        if ok.sum() >= 2 and np.ptp(x[ok]) > 0:
            slope, icpt = np.polyfit(x[ok], y[ok], 1)
            xs = np.linspace(x[ok].min(), x[ok].max(), 2)
            ax.plot(xs, slope * xs + icpt, color=color, lw=0.9, ls="--")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if len(groups) > 1:
        ax.legend(loc="best")
    return to_svg(fig, label=title or ylabel)


@_styled
def sparkline(
    x,
    y,
    xlabel: str = "",
    ylabel: str = "",
    threshold: float | None = None,
    value: float | None = None,
    lo: float | None = None,
    hi: float | None = None,
) -> Markup:
    """A small plot for one pytest-html row: the series, the threshold (dashed) and the measured value
    with its interval (band)."""
    fig = _figure(3.2, 1.7)
    ax = fig.add_subplot()
    x, y = arr(x), arr(y)
    ax.plot(x, y, "-o", ms=2.2, lw=1.2, color=RUN_COLORS[0])
    if threshold is not None and np.isfinite(threshold):
        ax.axhline(threshold, color="#d62728", lw=0.9, ls="--", label="threshold")
    if value is not None and lo is not None and hi is not None:
        ax.axhspan(lo, hi, color=RUN_COLORS[2], alpha=0.15, lw=0, label="measured CI")
    ax.set_xlabel(xlabel, fontsize=7.5)
    ax.set_ylabel(ylabel, fontsize=7.5)
    ax.tick_params(labelsize=7)
    if threshold is not None or value is not None:
        ax.legend(fontsize=6.5, loc="best")
    return to_svg(fig, css_class="plot spark", label=ylabel)
