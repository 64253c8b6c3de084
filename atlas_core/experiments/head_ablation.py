"""Head ablation: zero one query head's output (its ``head_dim`` slice at the input of the attention
output projection, exact under grouped-query attention) at a time, for every head of the swept layers
(every layer at the full profile, ``profile.head_layers`` sampled evenly otherwise), and measure the KL
from the clean run per family. With ``--screen atp`` (``ctx.screen``; None, exhaustive, at every profile) AtP ranks
every head and exact ablation runs only on the layers needed to settle the top ``TOP`` (``atlas_core.screening``);
the other heads are NaN (``null`` on disk) and no statistic reads them."""

from __future__ import annotations

from dataclasses import dataclass

import math
import time

import numpy as np

from atlas_core import screening

from atlas_core.experiments.clean import check_families
from atlas_core.experiments.context import Context
from atlas_core.experiments.layer_ablation import primary_sweep
from atlas_core.interventions import Ablate, Variant
from atlas_core.profiles import sample_layers
from atlas_core.sites import Site
from atlas_core.layers import profile_stat, relabel, value_at
from atlas_core.spec import ExperimentSpec, StatDecl
from atlas_core.metrics import Estimate
from atlas_core.stat import Stat, finite, ratio, relative_depth, series

NAME = "head_ablation"


@dataclass
class HeadScore:
    family: str
    layer: int
    head: int
    kl: float


@dataclass
class HeadScreen:
    """How a screened head ablation chose what to measure (``atlas_core.screening``): AtP estimated every head,
    exact ablation measured the heads of ``verified`` layers only. ``estimate`` is AtP's, in nats of target
    log-probability, never a measured effect: the result's ``kl`` holds exact values of verified heads and null
    elsewhere, and every statistic reads ``kl``."""

    method: str  # "atp"
    k: int  # the exact top-k the verification settles (with each family's strongest head)
    verified: list[int]  # layers whose every head was ablated exactly, in the order verified
    rounds: int  # exact sweeps run
    margin: float  # exact KL / estimate, the largest over the settled cells: the stopping rule's margin
    estimate: dict[str, list[list[float]]]  # family -> [layer index][head] mean |AtP estimate| over its prompts
    seconds: float  # the estimate's forward and backward passes


@dataclass
class HeadAblationResult:
    n_layers: int
    n_heads: int
    layers: list[int]  # layers swept (every layer at the full profile)
    families: list[str]
    mode: str
    kl: dict[str, list[list[float]]]  # family -> [layer index][head] mean KL
    max_head: HeadScore
    top: list[HeadScore]  # strongest (family, layer, head) cells, descending
    # the strongest head's KL with its bootstrap 95% interval: each family's prompts resampled together, the max
    # over the ``top`` cells taken in each resample (schema 3; None in older records: no per-prompt data kept)
    max_kl: Estimate | None = None
    # screened (``atlas run --screen atp``): which heads were verified; None: exhaustive, every head measured (schema 4)
    screen: HeadScreen | None = None


MODE = "zero"
TOP = 10


def config(ctx: Context) -> dict:
    out = {"mode": MODE, "head_layers": ctx.profile.head_layers, "top": TOP}
    return out if ctx.screen is None else {**out, "screen": ctx.screen}  # exhaustive records keep their hash


def variants(layers: list[int], n_heads: int) -> list[Variant]:
    return [
        Variant(f"head/{MODE}/L{layer}H{head}", (Ablate(Site("head", layer, head), MODE),))
        for layer in layers
        for head in range(n_heads)
    ]


def run(ctx: Context) -> HeadAblationResult:
    check_families(ctx)
    runner = ctx.runner
    d = runner.dims
    layers = sample_layers(d.n_layers, ctx.profile.head_layers)
    if ctx.screen is not None:
        return result(ctx, layers, *screened(ctx, layers))
    stats = runner.sweep(variants(layers, d.n_heads), progress=ctx.progress)
    return result(ctx, layers, stats.kl.reshape(len(layers), d.n_heads, -1), None)


def screened(ctx: Context, layers: list[int]) -> tuple[np.ndarray, HeadScreen]:
    """Per-prompt exact KL [layer index, head, prompt] of the heads the screen verified (NaN elsewhere) and the
    screen's record: AtP ranks every head, exact ablation of whole layers settles the top ``TOP``
    (``atlas_core.screening``)."""
    runner, d = ctx.runner, ctx.runner.dims
    t0 = time.perf_counter()
    est = screening.atp_estimates(runner, layers, ctx.targets, MODE)
    seconds = time.perf_counter() - t0
    fam_est = np.stack([np.abs(est[..., sl]).mean(axis=-1) for sl in ctx.family_slices.values()])
    per_prompt = np.full((len(layers), d.n_heads, runner.enc.n), np.nan)

    def sweep(idx: list[int]) -> np.ndarray:  # the exhaustive sweep's code path, on whole layers
        stats = runner.sweep(variants([layers[i] for i in idx], d.n_heads), progress=ctx.progress)
        per_prompt[idx] = stats.kl.reshape(len(idx), d.n_heads, -1)
        return np.stack([per_prompt[idx][..., sl].mean(axis=-1) for sl in ctx.family_slices.values()])

    v = screening.verify(fam_est, TOP, sweep)
    screen = HeadScreen(
        method=str(ctx.screen),
        k=TOP,
        verified=[layers[i] for i in v.verified],
        rounds=v.rounds,
        margin=v.margin,
        seconds=seconds,
        estimate={name: fam_est[fi].tolist() for fi, name in enumerate(ctx.family_slices)},
    )
    return per_prompt, screen


def result(ctx: Context, layers: list[int], kl_prompts: np.ndarray, screen: HeadScreen | None) -> HeadAblationResult:
    """The typed result from per-prompt KL [layer index, head, prompt] (NaN: a head not verified)."""
    d = ctx.runner.dims
    per_family = {name: kl_prompts[..., sl].mean(axis=-1) for name, sl in ctx.family_slices.items()}
    kl = {name: [[float(v) for v in row] for row in np.asarray(m)] for name, m in per_family.items()}
    top = top_heads(kl, layers, d.n_heads)
    per_prompt = {name: kl_prompts[..., sl] for name, sl in ctx.family_slices.items()}
    cells = [(s.family, np.asarray(per_prompt[s.family][layers.index(s.layer), s.head], dtype=np.float64)) for s in top]
    res = HeadAblationResult(
        n_layers=d.n_layers,
        n_heads=d.n_heads,
        layers=layers,
        families=list(ctx.families),
        mode=MODE,
        kl=kl,
        max_head=top[0],
        top=top,
        max_kl=max_interval(cells, n_boot=ctx.profile.n_boot, seed=ctx.seed),
        screen=screen,
    )
    return res


def max_interval(cells, *, n_boot: int, seed: int, level: float = 0.95) -> Estimate:
    """The largest of the cells' means over their prompts, with a percentile bootstrap interval: in each
    resample every family's prompts are drawn with replacement (the same draw for the cells of one family, which
    share their prompts) and the max over the cells is taken again. ``cells``: ``(family, per-prompt KL)`` of the
    strongest cells, strongest first."""
    point = max(float(v.mean()) for _, v in cells)
    n = {fam: len(v) for fam, v in cells}
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        idx = {fam: rng.integers(0, k, size=k) for fam, k in sorted(n.items())}
        draws.append(max(float(v[idx[fam]].mean()) for fam, v in cells))
    alpha = (1 - level) / 2
    lo, hi = np.quantile(draws, [alpha, 1 - alpha]) if draws else (point, point)
    return Estimate(point, float(lo), float(hi), int(sum(n.values())))


def top_heads(kl: dict, layers: list[int], n_heads: int) -> list[HeadScore]:
    """The ``TOP`` strongest (family, layer, head) cells of the per-family grids, strongest first (a head a
    screened run did not verify, NaN, is never ranked)."""
    scores = [
        HeadScore(family=name, layer=layers[li], head=h, kl=float(m[li][h]))
        for name, m in kl.items()
        for li in range(len(layers))
        for h in range(n_heads)
        if not math.isnan(m[li][h])
    ]
    order = sorted(range(len(scores)), key=lambda i: (-scores[i].kl, i))  # ties: family, layer, head order
    return [scores[i] for i in order[:TOP]]


def relayer(result: HeadAblationResult, order) -> HeadAblationResult:
    from dataclasses import replace

    from atlas_core.layers import inverse

    fams = list(result.kl)
    layers, grids = relabel(result.layers, order, *(result.kl[f] for f in fams))
    kl = dict(zip(fams, grids))
    top = top_heads(kl, layers, result.n_heads)
    screen = result.screen
    if screen is not None:
        inv = inverse(order)
        _, est = relabel(result.layers, order, *(screen.estimate[f] for f in fams))
        screen = replace(screen, verified=[inv[int(x)] for x in screen.verified], estimate=dict(zip(fams, est)))
    return replace(result, layers=layers, kl=kl, max_head=top[0], top=top, screen=screen)


def measured(result: HeadAblationResult) -> list[int]:
    """Indices into ``result.layers`` of the layers whose heads were ablated exactly: every one in an exhaustive
    sweep, the verified ones in a screened sweep (the others hold NaN, which no statistic reads)."""
    grids = list(result.kl.values())
    return [i for i in range(len(result.layers)) if grids and not any(math.isnan(v) for g in grids for v in g[i])]


def statistics(result: HeadAblationResult, n_layers: int, results: dict) -> dict[str, Stat]:
    """The strongest single head (family, layer, head, KL), its depth, the strongest head per family
    and, with the layer ablation of the same run, the layer/head gap (max layer KL / max head KL). In a screened
    sweep the profiles hold the verified layers' heads only: an estimate is never read as a measurement."""
    mh = result.max_head
    label = f"{mh.family} L{mh.layer} H{mh.head}"
    rows = measured(result)
    layers = [result.layers[i] for i in rows]
    grids = [[g[i] for i in rows] for g in result.kl.values()]
    per_layer = [max(max(g[i]) for g in grids) for i in range(len(layers))] if grids else []
    curve = series(layers, per_layer, "layer", "max head-ablation KL (nats)")
    per_head = [max(g[i][h] for g in grids) for i in range(len(layers)) for h in range(result.n_heads)] if grids else []
    out = {
        "heads.layer_profile": profile_stat(layers, per_layer, n_layers, ylabel="max head-ablation KL (nats)"),
        "heads.head_profile": profile_stat(
            [layer * result.n_heads + h for layer in layers for h in range(result.n_heads)],
            per_head,
            n_layers,
            axis="head",
            n_heads=result.n_heads,
            ylabel="head-ablation KL, max over families (nats)",
        ),
        # the share of layers whose heads were ablated: below 1 the strongest head may sit in a skipped layer
        "heads.layer_coverage": Stat(
            len(result.layers) / n_layers,
            label=f"{len(result.layers)} of {n_layers} layers"
            + (f" (screened: {len(layers)} verified)" if result.screen is not None else ""),
        ),
        # the interval where the record keeps one (schema 3); older records: the point alone
        "heads.max_kl": (
            Stat(
                float(mh.kl),
                finite(result.max_kl.lo),
                finite(result.max_kl.hi),
                result.max_kl.n,
                kind="estimate",
                label=label,
                series=curve,
            )
            if result.max_kl is not None
            else Stat(float(mh.kl), label=label, series=curve)
        ),
        "heads.max_layer": Stat(float(mh.layer), kind="index", label=label),
        "heads.max_head": Stat(float(mh.head), kind="index", label=label),
        "heads.max_layer_depth": Stat(relative_depth(mh.layer, n_layers), label=label),
    }
    items = [layer * result.n_heads + h for layer in layers for h in range(result.n_heads)]
    for fam, grid in zip(result.kl, grids):
        best = max(((v, li, h) for li, row in enumerate(grid) for h, v in enumerate(row)), default=None)
        if best is not None:  # read at the family's strongest head, which the claims name
            out[f"heads.family_max_kl.{fam}"] = value_at(
                items,
                [v for row in grid for v in row],
                layers[best[1]] * result.n_heads + best[2],
                n_layers,
                n_heads=result.n_heads,
                label=f"L{layers[best[1]]} H{best[2]}",
                ylabel=f"{fam} head-ablation KL (nats)",
            )
    layer = results.get("layer_ablation")
    if layer is not None:
        out["heads.layer_head_gap"] = Stat(
            ratio(max(primary_sweep(layer).family_mean_kl), mh.kl), label="max layer KL / max head KL"
        )
    return out


SPEC = ExperimentSpec(
    name=NAME,
    title="Head ablation",
    about="KL from zeroing one attention head at a time",
    order=30,
    run=run,
    config=config,
    result=HeadAblationResult,
    group="heads",
    statistics=statistics,
    headline=True,
    claims=("heads.max_kl", "heads.max_layer_depth", "heads.family_max_kl.*"),
    reads={"heads.layer_head_gap": ("layer_ablation",)},
    finding="headline finding, specialist heads",
    profile_fields=("head_layers",),
    section="atlas_core.report.sections.ablation:heads",
    macro="heads",
    overlay="atlas_core.report.compare:heads_overlay",
    declares=(
        StatDecl("heads.layer_profile", "nats", 0.0, math.inf, 0.0, axis="layer", about="max head KL per layer"),
        StatDecl("heads.head_profile", "nats", 0.0, math.inf, 0.0, axis="head", about="KL of each head"),
        StatDecl("heads.layer_coverage", "fraction", 0.0, 1.0, None, direction=0, about="share of layers swept"),
        StatDecl("heads.max_layer_depth", "fraction", 0.0, 1.0, None, direction=0),
        StatDecl("heads.max_layer", "layer", 0.0, math.inf, None, direction=0),
        StatDecl("heads.max_head", "head", 0.0, math.inf, None, direction=0),
        StatDecl(
            "heads.layer_head_gap", "ratio", 0.0, math.inf, None, direction=-1, about="max layer KL / max head KL"
        ),
        StatDecl("heads.max_kl", "nats", 0.0, math.inf, 0.0, about="KL of the strongest head"),
        StatDecl(
            "heads.family_max_kl.{family}", "nats", 0.0, math.inf, 0.0, at="head", about="a family's strongest head KL"
        ),
    ),
    relayer=relayer,
)
