"""Experiment 6, LoRA training perturbation: train a LoRA adapter (r 8, alpha 16, q/k/v/o projections,
no dropout, gradient checkpointing, batch size 1, as in the study) on every family's prompt -> target
pairs until the loss is below the profile's target (the study: 0.0098), then measure how far the
trained model moved: KL(base || trained) at the last position, per family.

Training: AdamW, peak learning rate 3e-4 decaying linearly to 0 at the profile's ``lora_max_steps``,
batch size 1. Both choices are measured: at a constant 1e-3, single steps kept undoing memorised pairs
(Coder-0.5B, ci profile: steps jumped back to 6-10 nats and 150 steps did not converge; with the decay it
converged in 73); at a 1e-3 peak with the decay, the full profile's 96 pairs diverged on Coder-1.5B (median
step loss back to ~7 nats by step 530 of 2,000) and spiked on Coder-0.5B and Gemma-3-270M; at a 3e-4 peak
the same Coder-1.5B training stayed stable (mean step loss over the last 38 of 426 steps 0.006).
Gradient norm is clipped at 1, the pairs go in a seeded order reshuffled each epoch, loss on the target
tokens only. It stops when the mean step loss over the last epoch is below the target *and* a pass
over every pair with the adapter as it is confirms it; ``final_loss`` is that pass's mean for the
saved adapter, and ``converged`` says whether it is below the target.

The adapter is trained on the shared model inside :func:`atlas_core.adapters_lora.new_adapter`, saved
to ``<out>/lora_adapter_seed<seed>`` (with ``atlas_meta.json`` saying what it was trained on) and
unloaded, so the base model every other experiment sees is bitwise unchanged. ``transfer`` and
``adapter_ablation`` re-attach it from there (:func:`ensure_adapter`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from atlas_core.metrics import Estimate

import math
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
from filelock import Timeout

from atlas_core import AtlasError
from atlas_core.adapters_lora import (
    LoraSpec,
    attached_adapter,
    new_adapter,
    read_meta,
    save_adapter,
    spec_for,
    training_mode,
)
from atlas_core.experiments.context import Context
from atlas_core.experiments.lora_fit import MAX_GRAD_NORM, pair_losses, train
from atlas_core.spec import GOLDEN_REL_TRAINED, ExperimentSpec, StatDecl
from atlas_core.stat import Stat, estimate_stat, finite, series
from atlas_core.metrics import kl_divergence
from atlas_core.results import RecordStore, config_hash
from atlas_core.runner import Runner

NAME = "lora_training"


@dataclass
class LoraResult:
    rank: int
    alpha: int
    targets: list[str]
    batch_size: int
    learning_rate: float
    steps: int
    final_loss: float
    target_loss: float
    converged: bool
    loss_curve: list[float]
    kl_per_family: dict[str, Estimate]  # KL(base || trained) at the last position
    adapter_dir: str
    train_seconds: float
    seed: int
    # the pairs the trained adapter still gets wrong (final loss above the target), worst first: which
    # prompts keep a run from converging ({"family", "prompt", "target", "loss"})
    above_target: list[dict] = field(default_factory=list)


LEARNING_RATE = 3e-4  # peak; 1e-3 diverged at batch size 1 on Coder-1.5B (see the docstring)
SCHEDULE = "linear"  # decays to 0 at the profile's lora_max_steps (see SCHEDULES)
BATCH_SIZE = 1  # the study's (VRAM-bound on its 8 GB card); kept for comparability


def config(ctx: Context) -> dict:
    """Everything the trained adapter depends on (beyond model, profile, families and seed)."""
    spec = spec_for(ctx.lm.model)
    return {
        "lora": spec.to_dict(),
        "learning_rate": LEARNING_RATE,
        "schedule": SCHEDULE,
        "max_grad_norm": MAX_GRAD_NORM,
        "batch_size": BATCH_SIZE,
        "optimizer": "adamw",
        "weight_decay": 0.0,
        "checkpointing": True,
        "loss_window": "epoch",
        "lora_items": ctx.profile.lora_items,
        "max_steps": ctx.profile.lora_max_steps,
        "target_loss": ctx.profile.lora_target_loss,
    }


def adapter_key(ctx: Context) -> str:
    """What identifies a trained adapter: model weights, seed, training config, training data."""
    info = ctx.lm.info
    return config_hash(
        {
            "model": info.weights_sha256,
            "dtype": info.dtype,
            "device_type": info.device.split(":")[0],
            "seed": ctx.seed,
            "config": config(ctx),
            "families": {n: f.sha256 for n, f in ctx.families.items()},
            "items": {n: len(f.items) for n, f in ctx.families.items()},
        }
    )


def adapter_dir(ctx: Context) -> Path:
    """``<out>/lora_adapter_seed<seed>``; without an out dir, a temporary folder kept for the run."""
    if ctx.out_dir is not None:
        return Path(ctx.out_dir) / f"lora_adapter_seed{ctx.seed}"
    if ctx.artifacts.lora_tmp is None:
        ctx.artifacts.lora_tmp = ctx.temporary_dir("atlas-lora-")
    return ctx.artifacts.lora_tmp / f"lora_adapter_seed{ctx.seed}"


def training_items(ctx: Context) -> list[tuple[str, object]]:
    """(family name, item) for the first ``profile.lora_items`` items of every family, in training order."""
    n = ctx.profile.lora_items
    return [(fam.name, item) for fam in ctx.families.values() for item in (fam.items if n is None else fam.items[:n])]


def training_pairs(ctx: Context) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, target ids) for ``training_items``. The prompt is tokenized exactly as the runner
    does; the target without special tokens."""
    tok = ctx.lm.tokenizer
    pairs = []
    for family, item in training_items(ctx):
        p = list(tok(item.prompt)["input_ids"])
        t = list(tok(item.target, add_special_tokens=False)["input_ids"])
        if not p or not t:
            raise AtlasError(f"{family}: item {item.id or item.prompt!r} tokenizes to an empty prompt or target")
        pairs.append((p, t))
    if not pairs:
        raise AtlasError("no training pairs: select at least one family with items")
    return pairs


def run(ctx: Context) -> LoraResult:
    model = ctx.lm.model
    spec: LoraSpec = spec_for(model)
    prof = ctx.profile
    if prof.lora_max_steps < 1 or not prof.lora_target_loss > 0:
        raise AtlasError(f"profile {prof.name}: lora_max_steps must be >= 1 and lora_target_loss > 0")
    pairs = training_pairs(ctx)
    window = len(pairs)  # one epoch at batch size 1
    base_logp = ctx.runner.clean_logprobs  # the base model's, computed before any adapter is attached
    out_dir = adapter_dir(ctx)

    with _adapter_lock(ctx, wait=False), new_adapter(model, spec, ctx.seed) as peft_model:
        t0 = time.perf_counter()
        ck = ctx.sweeping.checkpoints  # lent by `atlas run`: training resumes where an interrupted run left it
        with training_mode(peft_model):
            losses, converged = train(
                peft_model,
                pairs,
                seed=ctx.seed,
                lr=LEARNING_RATE,
                max_steps=prof.lora_max_steps,
                target_loss=prof.lora_target_loss,
                window=window,
                schedule=SCHEDULE,
                progress=ctx.progress,
                checkpoints=ck,
                checkpoint_key=adapter_key(ctx),
            )
        train_seconds = time.perf_counter() - t0 + (ck.prior_seconds if ck is not None else 0.0)
        per_pair = pair_losses(peft_model, pairs)  # the trained adapter on every pair
        final = float(per_pair.mean())
        converged = converged or final < prof.lora_target_loss  # also when the budget ran out on the way down
        meta = {
            "key": adapter_key(ctx),
            "model": ctx.lm.info.name,
            "weights_sha256": ctx.lm.info.weights_sha256,
            "seed": ctx.seed,
            "config": config(ctx),
            "steps": len(losses),
            "converged": converged,
            "final_loss": final,
        }
        save_adapter(peft_model, out_dir, meta)
        trained_logp = trained_runner(ctx, peft_model).clean_logprobs

    kl = kl_divergence(base_logp, trained_logp).cpu().numpy()
    result = LoraResult(
        rank=spec.rank,
        alpha=spec.alpha,
        targets=list(spec.targets),
        batch_size=BATCH_SIZE,
        learning_rate=LEARNING_RATE,
        steps=len(losses),
        final_loss=final,
        target_loss=prof.lora_target_loss,
        converged=converged,
        loss_curve=losses,
        kl_per_family={name: ctx.estimate(v) for name, v in ctx.per_family(kl).items()},
        adapter_dir=str(out_dir),
        train_seconds=round(train_seconds, 3),
        seed=ctx.seed,
        above_target=_above_target(training_items(ctx), per_pair, prof.lora_target_loss),
    )
    ctx.artifacts.lora_adapter_dir = Path(out_dir)
    return result


def _above_target(items: list[tuple[str, object]], losses: np.ndarray, target: float) -> list[dict]:
    above = [
        {"family": fam, "prompt": item.prompt, "target": item.target, "loss": float(loss)}
        for (fam, item), loss in zip(items, losses)
        if loss >= target
    ]
    return sorted(above, key=lambda d: -d["loss"])


def ensure_adapter(ctx: Context) -> Path:
    """The trained adapter for this context: the one trained earlier in this run, else one saved in the
    out dir by an earlier run with the same model, seed, config and data, else train it now. Another run
    training it in the same folder is waited for (its lock), then the adapter it saved is read back."""
    key = adapter_key(ctx)

    def saved() -> Path | None:
        for candidate in (ctx.artifacts.lora_adapter_dir, adapter_dir(ctx) if ctx.out_dir is not None else None):
            if candidate is not None:
                meta = read_meta(candidate)  # a damaged adapter raises, naming the fix
                if meta is not None and meta.get("key") == key:
                    return Path(candidate)
        return None

    found = saved()
    if found is not None:
        return found
    with _adapter_lock(ctx, wait=True):
        found = saved()  # trained by the run we waited for
        if found is None:
            run(ctx)
            found = ctx.artifacts.lora_adapter_dir
            assert found is not None  # run(ctx) sets it
    return found


def adapter_lock_name(seed: int) -> str:
    """The run folder's lock (``RecordStore.lock``) held while the seed's adapter is trained and saved."""
    return f"lora_adapter_seed{seed}"


def adapter_busy(out_dir, seed: int, lock_file: str) -> str:
    return (
        f"another atlas run in {out_dir} is training the seed-{seed} LoRA adapter (it holds {lock_file}); wait "
        "for it to finish, or leave lora_training out of --experiments"
    )


@contextmanager
def _adapter_lock(ctx: Context, wait: bool) -> Iterator[None]:
    """Hold the out dir's lock on this seed's adapter (nothing without an out dir): one run trains and
    saves it at a time. ``wait``: block until another run holding it is done; else fail at once, naming it."""
    if ctx.out_dir is None:
        yield
        return
    lock = RecordStore(ctx.out_dir).lock(adapter_lock_name(ctx.seed))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if not wait:
            raise AtlasError(adapter_busy(ctx.out_dir, ctx.seed, lock.lock_file)) from None
        if ctx.progress:
            print(
                f"[atlas] waiting for another run to finish the LoRA adapter ({lock.lock_file})",
                file=sys.stderr,
                flush=True,
            )
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def trained_runner(ctx: Context, peft_model) -> Runner:
    """A runner over the context's prompts on the adapter-carrying model (same tokenizer and padding as
    ``ctx.runner``, so activations line up position for position)."""
    return Runner(
        peft_model,
        ctx.lm.tokenizer,
        ctx.prompts,
        memory_mb=ctx.profile.memory_mb,
        seed=ctx.seed,
        progress=ctx.progress,
        sweeping=ctx.sweeping,
    )


__all__ = [
    "NAME",
    "SPEC",
    "config",
    "run",
    "ensure_adapter",
    "attached_adapter",
    "adapter_dir",
    "adapter_key",
    "training_items",
    "training_pairs",
    "trained_runner",
]


def statistics(result: LoraResult, n_layers: int, results: dict) -> dict[str, Stat]:
    """LoRA training: final loss and base -> trained KL per family, and the families by that KL."""
    out = {"lora.final_loss": Stat(finite(result.final_loss))}
    kl = {fam: est for fam, est in result.kl_per_family.items() if finite(est.value) is not None}
    for fam, est in kl.items():
        out[f"lora.kl.{fam}"] = estimate_stat(est)
    if kl:  # families by how far training moved them, most first (the study: json_schema 6.47 first)
        order = tuple(sorted(kl, key=lambda f: -kl[f].value))
        curve = series(
            range(len(order)),
            [kl[f].value for f in order],
            "family (" + ", ".join(order) + ")",
            "base -> trained KL (nats)",
        )
        out["lora.ranking"] = Stat(None, kind="ranking", ranking=order, label=order[0], series=curve)
    return out


SPEC = ExperimentSpec(
    name=NAME,
    title="LoRA training",
    about="the trained perturbation the next two experiments use",
    order=60,
    run=run,
    config=config,
    result=LoraResult,
    seed_dependent=True,
    on_worker=True,
    group="lora",
    statistics=statistics,
    claims=("lora.kl.*",),
    ranked=("lora.ranking", "base -> trained KL"),
    finding="LoRA training, which families the adapter shifts most",
    profile_fields=("lora_items", "lora_max_steps", "lora_target_loss"),
    section="atlas_core.report.sections.lora:lora",
    macro="lora",
    overlay="atlas_core.report.compare:lora_overlay",
    declares=(
        StatDecl("lora.final_loss", "loss", 0.0, math.inf, None, direction=-1),
        StatDecl(
            "lora.ranking",
            "nats",
            0.0,
            math.inf,
            0.0,
            axis="family",
            about="families by base -> trained KL",
            invariant="the adapter's training moves factual recall most on every model measured (first of the eight "
            "families on Coder-0.5B, Coder-1.5B and Gemma-3-270M at the full profile)",
        ),
        StatDecl("lora.kl.{family}", "nats", 0.0, math.inf, 0.0),
    ),
    golden_rel=GOLDEN_REL_TRAINED,
)
