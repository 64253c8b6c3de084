"""MLP ablation: replace each layer's MLP write to the residual (zero, mean or resample), one layer at a
time, and measure the KL from the clean run per family. The attention's write and the residual it
received are left as they are."""

from __future__ import annotations

from atlas_core.experiments.context import Context
from atlas_core.experiments.layer_ablation import find_sweep, run_sweeps
from atlas_core.experiments.schema import MLPAblationResult

NAME = "mlp_ablation"
SEED_DEPENDENT = False  # resample donors are drawn with ctx.seed, which is part of the config hash
REQUIRES = ()
PRIMARY = "mlp/zero"


def config(ctx: Context) -> dict:
    return {"targets": ["mlp"], "modes": list(ctx.profile.ablation_modes), "primary": PRIMARY}


def run(ctx: Context) -> MLPAblationResult:
    sweeps = run_sweeps(ctx, ("mlp",), "MLP ablation")
    primary = find_sweep(sweeps, PRIMARY)
    notes = "Each layer's MLP output (its write to the residual) is replaced; everything else runs as usual."
    if primary is not None:
        v = primary.family_mean_kl
        notes += (f" Zero mode, mean KL across families: {min(v):.2f} to {max(v):.2f} nats, "
                  f"strongest MLP at L{primary.ranking[0]}.")
    result = MLPAblationResult(n_layers=ctx.runner.dims.n_layers, families=list(ctx.families), sweeps=sweeps,
                               primary=PRIMARY, notes=notes)
    ctx.shared[NAME] = result
    return result
