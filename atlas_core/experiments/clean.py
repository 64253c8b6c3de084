"""Clean baseline: each family's top-1 accuracy and target probability on the unmodified model, so a
reader sees which skills the model has before reading what ablating them does.

Only the first target token is scored (``atlas_core.tasks.target_token_id``).
"""

from __future__ import annotations

from dataclasses import dataclass
from atlas_core.metrics import Estimate

import numpy as np
import torch

from atlas_core import AtlasError
from atlas_core.experiments.context import Context
from atlas_core.spec import ExperimentSpec, StatDecl
from atlas_core.stat import estimate_stat

NAME = "clean"


@dataclass
class FamilyAccuracy:
    family: str
    n: int
    top1_accuracy: Estimate  # argmax == first target token
    target_prob: Estimate  # clean probability of the first target token


@dataclass
class PromptOutcome:
    family: str
    prompt: str
    target: str
    target_id: int
    predicted: str  # decoded argmax token
    target_prob: float
    correct: bool


@dataclass
class CleanResult:
    families: list[FamilyAccuracy]
    prompts: list[PromptOutcome]
    overall_accuracy: Estimate


def check_families(ctx: Context) -> None:
    """Every experiment needs at least one family and at least one item in each: fail before any work."""
    if not ctx.families:
        raise AtlasError("no task families in the context; load some with atlas_core.tasks.load_families()")
    empty = [name for name, fam in ctx.families.items() if not fam.items]
    if empty:
        raise AtlasError(
            f"task famil{'y' if len(empty) == 1 else 'ies'} {', '.join(empty)} "
            "hold no items; load them with n_items >= 1 or drop them from the selection"
        )


def config(ctx: Context) -> dict:
    return {"scored": "first target token"}


def run(ctx: Context) -> CleanResult:
    check_families(ctx)
    targets = ctx.targets
    logp = ctx.runner.clean_logprobs.float()
    argmax = logp.argmax(-1).cpu().numpy()
    tid = np.asarray(targets, dtype=np.int64)
    tprob = (
        logp[torch.arange(len(tid), device=logp.device), torch.as_tensor(tid, device=logp.device)]
        .exp()
        .cpu()
        .numpy()
        .astype(np.float64)
    )
    correct = argmax == tid
    tok = ctx.lm.tokenizer

    prompts: list[PromptOutcome] = []
    families: list[FamilyAccuracy] = []
    for name, fam in ctx.families.items():
        sl = ctx.family_slices[name]
        for i, item in zip(range(sl.start, sl.stop), fam.items):
            prompts.append(
                PromptOutcome(
                    family=name,
                    prompt=item.prompt,
                    target=item.target,
                    target_id=int(tid[i]),
                    predicted=tok.decode([int(argmax[i])]),
                    target_prob=float(tprob[i]),
                    correct=bool(correct[i]),
                )
            )
        families.append(
            FamilyAccuracy(
                family=name,
                n=len(fam.items),
                top1_accuracy=ctx.estimate(correct[sl].astype(np.float64)),
                target_prob=ctx.estimate(tprob[sl].astype(np.float64)),
            )
        )
    result = CleanResult(families=families, prompts=prompts, overall_accuracy=ctx.estimate(correct.astype(np.float64)))
    return result


def statistics(result: CleanResult, n_layers: int, results: dict) -> dict:
    """Clean top-1 accuracy overall and per family (what the model can do before any ablation)."""
    out = {"clean.accuracy": estimate_stat(result.overall_accuracy)}
    for fa in result.families:
        out[f"clean.accuracy.{fa.family}"] = estimate_stat(fa.top1_accuracy)
    return out


SPEC = ExperimentSpec(
    name=NAME,
    title="Clean accuracy",
    about="which skills the model has before any intervention",
    order=0,
    run=run,
    config=config,
    result=CleanResult,
    group="clean",
    statistics=statistics,
    profile_fields=("n_items", "n_boot", "memory_mb"),
    section="atlas_core.report.sections.ablation:clean",
    macro="clean",
    overlay="atlas_core.report.compare:clean_overlay",
    declares=(
        StatDecl("clean.accuracy", "fraction", 0.0, 1.0, None, about="top-1 accuracy"),
        StatDecl("clean.accuracy.{family}", "fraction", 0.0, 1.0, None, about="top-1 accuracy of a family"),
    ),
)
