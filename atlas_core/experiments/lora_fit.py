"""The LoRA training loop of ``lora_training``: the objective (cross-entropy on the target tokens only), AdamW at
batch size 1 with a learning-rate schedule and gradient clipping, the convergence rule, and the training state
saved and reloaded so an interrupted run resumes bit for bit. Apart from the experiment so that the loop can be
read, tested and reused on its own (``atlas_core.plan.workload`` replays its order)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from atlas_core import AtlasError
from atlas_core.checkpoints import Checkpoints
from atlas_core.forward import logprobs_of_hidden
from atlas_core.integrity import torch_load_sealed, torch_save_sealed
from atlas_core.models.adapters import decoder
from atlas_core.results import atomic_write

MAX_GRAD_NORM = 1.0
SCHEDULES = {  # learning-rate factor at step i of n
    "constant": lambda i, n: 1.0,
    "linear": lambda i, n: max(0.0, 1.0 - i / n),
    "cosine": lambda i, n: 0.5 * (1.0 + math.cos(math.pi * min(i, n) / n)),
}


def make_batch(prompt_ids: list[int], target_ids: list[int], device) -> tuple[torch.Tensor, torch.Tensor]:
    """One training row: ``input_ids`` = prompt + target; ``labels`` -100 on the prompt (no loss there)."""
    ids = torch.tensor([list(prompt_ids) + list(target_ids)], device=device)
    labels = torch.tensor([[-100] * len(prompt_ids) + list(target_ids)], device=device)
    return ids, labels


def pair_losses(model, pairs: list[tuple[list[int], list[int]]]) -> np.ndarray:
    """Per pair, the mean cross-entropy of its target tokens given its prompt (the training objective)
    for the model as it is now, without gradients."""
    device = next(model.parameters()).device
    with torch.inference_mode():
        return np.asarray([float(target_loss_of(model, *make_batch(p, t, device))) for p, t in pairs])


def target_loss_of(model, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the labelled (target) tokens of a batch.

    Only the positions that predict a labelled token reach the LM head (the head is 151,936 wide on
    Qwen: running it over the prompt positions would be most of a step's work for nothing); the
    logits go through the same final soft-capping as the runner's."""
    keep = labels[:, 1:] != -100  # position i predicts token i + 1
    hidden = decoder(model)(input_ids=ids, use_cache=False).last_hidden_state[:, :-1][keep]
    logp = logprobs_of_hidden(model, hidden)  # [n_target, vocab] fp32
    return -logp.gather(-1, labels[:, 1:][keep][:, None]).mean()


def train(
    peft_model,
    pairs: list[tuple[list[int], list[int]]],
    *,
    seed: int,
    lr: float,
    max_steps: int,
    target_loss: float,
    window: int,
    max_grad_norm: float = MAX_GRAD_NORM,
    schedule: str = "constant",
    progress: bool = False,
    checkpoints: Checkpoints | None = None,
    checkpoint_key: str = "",
) -> tuple[list[float], bool]:
    """AdamW at batch size 1 over the pairs in a seeded order reshuffled every epoch; loss on the target
    tokens only. Stops when the mean loss of the last ``window`` steps is below ``target_loss`` and a
    pass over every pair confirms it, or after ``max_steps``. Returns the per-step loss curve and
    whether it converged.

    With ``checkpoints`` (the run's), the whole training state (LoRA weights, AdamW moments, schedule, shuffling
    RNG, the epoch's remaining order, the loss curve) is saved in its folder (:func:`state_path`) every
    ``checkpoints.interval`` seconds, and a call that finds a state saved under the same ``checkpoint_key``
    continues from it: the result equals an uninterrupted run's bit for bit on CPU. Each save also keeps the
    time spent so far (``Checkpoints.save_elapsed``)."""
    checkpoint = None if checkpoints is None else state_path(checkpoints, seed)
    device = next(peft_model.parameters()).device
    params = [p for p in peft_model.parameters() if p.requires_grad]
    if not params:
        raise AtlasError("the adapter has no trainable parameters")
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    if schedule not in SCHEDULES:
        raise AtlasError(f"unknown learning-rate schedule {schedule!r}; use one of {', '.join(SCHEDULES)}")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: SCHEDULES[schedule](i, max_steps))
    rng = np.random.default_rng(seed)
    batches = [make_batch(p, t, device) for p, t in pairs]
    losses: list[float] = []
    order: list[int] = []
    converged = False
    last_check = -window
    start = 0
    saved = load_state(checkpoint, checkpoint_key) if checkpoint is not None else None
    if saved is not None:
        with torch.no_grad():
            for p, v in zip(params, saved["params"], strict=True):
                p.copy_(v)
        opt.load_state_dict(saved["opt"])
        sched.load_state_dict(saved["sched"])
        rng.bit_generator.state = saved["rng"]
        order, losses, last_check, start = (
            list(saved["order"]),
            list(saved["losses"]),
            saved["last_check"],
            saved["step"],
        )
    last_save = time.monotonic()
    bar = tqdm(total=max_steps, initial=start, desc="lora", unit="step", disable=not progress, leave=False)
    try:
        for step in range(start, max_steps):
            if not order:
                order = list(rng.permutation(len(batches)))
            ids, labels = batches[order.pop(0)]
            loss = target_loss_of(peft_model, ids, labels)
            if not torch.isfinite(loss):
                raise AtlasError(f"LoRA training diverged at step {step} (loss {loss.item()}); lower the learning rate")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            bar.update(1)
            if len(losses) >= window:
                running = float(np.mean(losses[-window:]))
                bar.set_postfix(loss=f"{running:.4f}")
                # each step's loss is measured before its update, and later updates can undo earlier
                # pairs (batch size 1): confirm on every pair with the adapter as it is now, at most
                # once an epoch (a confirmation pass costs an epoch's forwards)
                if running < target_loss and step - last_check >= window:
                    last_check = step
                    if eval_loss(peft_model, pairs) < target_loss:
                        converged = True
                        break
            if (
                checkpoints is not None
                and checkpoint is not None
                and time.monotonic() - last_save >= checkpoints.interval
            ):
                save_state(
                    checkpoint,
                    checkpoints,
                    {
                        "key": checkpoint_key,
                        "step": step + 1,
                        "params": [p.detach().clone() for p in params],
                        "opt": opt.state_dict(),
                        "sched": sched.state_dict(),
                        "rng": rng.bit_generator.state,
                        "order": [int(i) for i in order],
                        "losses": losses,
                        "last_check": last_check,
                    },
                )
                last_save = time.monotonic()
    finally:
        bar.close()
        opt.zero_grad(set_to_none=True)
    return losses, converged


def state_path(checkpoints: Checkpoints, seed: int) -> Path:
    """Where training at ``seed`` keeps its state in the run's checkpoint folder."""
    return checkpoints.directory / f"lora_train_seed{seed}.pt"


def save_state(path: Path, checkpoints: Checkpoints | None, state: dict) -> None:
    """torch.save (the AdamW state is nested, which safetensors does not hold), sealed with its SHA-256
    (``torch.load`` does not check the zip's CRC: garbled bytes would load as other numbers), written atomically."""
    atomic_write(path, lambda tmp: torch_save_sealed(state, tmp))
    if checkpoints is not None:
        checkpoints.save_elapsed()


def load_state(path: Path, key: str) -> dict | None:
    """A saved training state for ``key``; None when absent, unreadable, not matching its recorded SHA-256,
    or from other training."""
    if not path.is_file():
        return None
    try:
        state = torch_load_sealed(path)
    except Exception:  # a state that cannot be read or fails its hash is retrained, never trusted
        return None
    return state if isinstance(state, dict) and state.get("key") == key else None


def eval_loss(peft_model, pairs) -> float:
    """Mean target loss over every pair, evaluated in eval mode (no dropout, no checkpointing)."""
    was = peft_model.training
    peft_model.eval()
    try:
        return float(pair_losses(peft_model, pairs).mean())
    finally:
        peft_model.train(was)
