"""Experiment 7, cross-model activation transfer: patch the LoRA-trained model's residual after layer L
(every position) into the base model and ask how much of the trained model's output comes back.

Recovery, per prompt, is ``1 - KL(trained || patched) / KL(trained || base)`` (``metrics.kl_recovery``):
1 when the patch reproduces the trained output, 0 when it changes nothing. A prompt whose base KL is
below ``MIN_BASE_KL`` (the adapter left it alone) has no defined recovery: it is reported as NaN and
left out of every mean; a family with no such prompt is NaN. Patching the last layer's residual gives
recovery 1 (only the final norm and LM head follow, and LoRA does not touch them).

The trained activations come from the adapter attached to the shared model for one clean pass; the
patched sweep runs on the base model after the adapter is unloaded, reusing the run's clean prefix.
"""

from __future__ import annotations

import numpy as np

from atlas_core import AtlasError
from atlas_core.adapters_lora import attached_adapter
from atlas_core.experiments import lora_training
from atlas_core.experiments.context import Context
from atlas_core.experiments.schema import TransferResult
from atlas_core.interventions import Patch, Variant
from atlas_core.metrics import kl_divergence, kl_recovery
from atlas_core.sites import Site

NAME = "transfer"
SEED_DEPENDENT = True
REQUIRES: tuple[str, ...] = ("lora_training",)

ZONE_THRESHOLD = 0.95  # layers recovering at least this much form the transfer zone
MIN_BASE_KL = 1e-4  # nats: below this the adapter did not move the prompt, recovery is undefined
N_TOP = 3  # the study reports the top three transfer layers


def config(ctx: Context) -> dict:
    return {"lora": lora_training.config(ctx), "zone_threshold": ZONE_THRESHOLD, "min_base_kl": MIN_BASE_KL,
            "n_top": N_TOP, "positions": "all", "site": "resid"}


def run(ctx: Context) -> TransferResult:
    model = ctx.lm.model
    n_layers = ctx.runner.dims.n_layers
    base_logp = ctx.runner.clean_logprobs  # the base clean pass (and its residual cache) before any adapter
    adapter = lora_training.ensure_adapter(ctx)

    with attached_adapter(model, adapter) as peft_model:
        trained = lora_training.trained_runner(ctx, peft_model)
        trained_resid = trained.residuals  # [n_layers + 1, P, T, d], same padded layout as ctx.runner
        trained_logp = trained.clean_logprobs
    # the adapter is unloaded: ctx.runner's model is the base model again

    layer_ids = list(range(n_layers))
    variants = [Variant(f"L{layer}", (Patch(Site("resid", layer), trained_resid[layer + 1]),)) for layer in layer_ids]
    stats = ctx.runner.sweep(variants, reference_logprobs=trained_logp, progress=ctx.progress)

    base_kl = kl_divergence(trained_logp, base_logp).cpu().numpy()  # [P]
    valid = base_kl >= MIN_BASE_KL
    if not valid.any():
        raise AtlasError(f"the trained adapter leaves every prompt's output within {MIN_BASE_KL} nats of the base "
                         "model: nothing to transfer (train longer or with a higher learning rate)")
    rec = kl_recovery(stats.kl, np.where(valid, base_kl, 0.0)[None, :])  # [L, P], NaN where not valid

    recovery, fam_base_kl = {}, {}
    for name, sl in ctx.family_slices.items():
        fam_valid = valid[sl]
        fam_base_kl[name] = float(base_kl[sl].mean())
        recovery[name] = [float(rec[i, sl][fam_valid].mean()) if fam_valid.any() else float("nan")
                          for i in range(len(layer_ids))]
    mean_recovery = [ctx.estimate(rec[i, valid]) for i in range(len(layer_ids))]
    values = np.array([e.value for e in mean_recovery])
    ranked = [layer_ids[i] for i in np.argsort(-values, kind="stable")]
    result = TransferResult(
        layers=layer_ids, families=list(ctx.families), recovery=recovery, mean_recovery=mean_recovery,
        base_kl=fam_base_kl, top_layers=ranked[:N_TOP],
        zone=[layer for layer, v in zip(layer_ids, values) if v >= ZONE_THRESHOLD], zone_threshold=ZONE_THRESHOLD,
    )
    ctx.shared[NAME] = result
    return result
