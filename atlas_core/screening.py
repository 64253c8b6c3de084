"""Screened head ablation: attribution patching (AtP, Kramár et al. 2024) ranks every head from one forward and
one backward pass per block of prompts, and exact ablation verifies the candidates until the exact top-k is
settled.

The estimate. KL's gradient is zero at the clean point, so AtP screens on the target token's log-probability
``m``: ablating head ``h`` of layer ``l`` replaces its slice ``z`` at the output projection's input by ``a`` (0 for
zero ablation, the reference mean for mean ablation: what ``Ablate(Site("head", l, h), mode)`` writes), and
``Δm ≈ Σ_positions (a - z) · ∂m/∂z``. A head's estimate for a family is the mean over its prompts of ``|Δm|``
(nats of target log-probability, not KL: it ranks heads, it is never reported as an effect).

AtP*'s two refinements: the QK fix does not apply (it corrects the softmax a patched query or key passes
through; the head site is after the softmax and enters the output projection linearly). GradDrop is not used:
it takes one backward pass per layer (24-28 here instead of one) to temper cancellation between paths, and the
verification below already measures how far the estimate falls short and widens by that much.

The verification (:func:`settle`). Exact ablation runs whole layers (every head of a layer, as the exhaustive
sweep does; a verified head's KL is the exhaustive sweep's up to the rounding of other chunk shapes, ~1e-7
relative, since the runner's chunks hold the variants of several layers). The claimed cells
are the ``k`` strongest verified (family, layer, head) cells and each family's strongest verified cell. The
margin ``ρ`` is the largest ratio exact KL / estimate over the claimed cells: how far the estimate under-states
a cell strong enough to be claimed, measured on this run. An unverified cell's bound is ``ρ x`` its estimate;
the verification stops when no unverified cell's bound exceeds the weakest claim it could displace (the k-th
exact KL, or its family's strongest exact KL; a tie changes no claimed value), and otherwise verifies the layers holding the highest
bounds (at most as many layers again as are verified) and measures again. This is a rule measured on the data,
not a proof: a head the estimate under-states by more than any claimed cell can still be missed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from atlas_core import AtlasError
from atlas_core.forward import logprobs_of_hidden
from atlas_core.hooks import hooked
from atlas_core.models.adapters import adapter_for, decoder, embeddings, layer_part
from atlas_core.runner import Runner
from atlas_core.sites import Site

SCREENS = ("atp",)  # --screen methods; None: exhaustive (every profile's default)
SCREENED = ("head_ablation",)  # experiments that take --screen
BLOCK = 8  # prompts per forward/backward pass of the estimate


def check_screen(screen: str | None, experiments: Sequence[str]) -> None:
    """Bad ``--screen`` input, before any work: an unknown method, or no experiment here that takes one."""
    if screen is None:
        return
    if screen not in SCREENS:
        raise AtlasError(
            f"unknown --screen {screen!r}; methods are {', '.join(SCREENS)} (omit it for the exhaustive sweep)"
        )
    if not any(name in SCREENED for name in experiments):
        raise AtlasError(
            f"--screen {screen} applies to {', '.join(SCREENED)}, which this run does not include "
            f"(experiments: {', '.join(experiments)}); add it or drop --screen"
        )


def atp_estimates(runner: Runner, layers: Sequence[int], targets: Sequence[int], mode: str = "zero") -> np.ndarray:
    """[len(layers), n_heads, prompts]: AtP's first-order change of each prompt's target log-probability from
    ablating each head (``mode`` as ``Ablate``: zero or mean), from one forward and one backward pass per block
    of prompts over the stock model (left-padded; only the last position reaches the LM head)."""
    if mode not in ("zero", "mean"):
        raise AtlasError(f"AtP screening estimates zero and mean head ablation, not {mode!r}")
    model, enc, d = runner.model, runner.enc, runner.dims
    if len(targets) != enc.n:
        raise AtlasError(f"{len(targets)} targets for {enc.n} prompts")
    o_proj = adapter_for(model).o_proj
    ablated = {
        layer: (
            torch.zeros(d.n_heads, d.head_dim)
            if mode == "zero"
            else torch.stack([runner.mean_activation(Site("head", layer, h)).float().cpu() for h in range(d.n_heads)])
        )
        for layer in layers
    }
    tid = torch.as_tensor([int(t) for t in targets], device=runner.device)
    out = np.zeros((len(layers), d.n_heads, enc.n))
    for p0 in range(0, enc.n, BLOCK):
        rows = slice(p0, min(p0 + BLOCK, enc.n))
        acts: dict[int, torch.Tensor] = {}

        def keep(layer: int):
            def hook(module, args, kwargs):
                acts[layer] = args[0] if args else kwargs["input"]

            return hook

        def track(module, args, kwargs, output):  # the graph starts at the embedding: weights need no grad
            return output.detach().requires_grad_(True)

        specs = [(embeddings(model), "forward", track)] + [
            (layer_part(model, layer, o_proj), "pre", keep(layer)) for layer in layers
        ]
        with torch.enable_grad(), hooked(specs):
            hidden = decoder(model)(
                input_ids=enc.input_ids[rows],
                attention_mask=enc.attention_mask[rows],
                position_ids=enc.position_ids[rows],
                use_cache=False,
            ).last_hidden_state[:, -1]
            metric = logprobs_of_hidden(model, hidden).gather(-1, tid[rows, None]).sum()
            grads = torch.autograd.grad(metric, [acts[layer] for layer in layers])  # no weight's .grad is touched
        mask = enc.attention_mask[rows].float().cpu()[:, :, None, None]
        for li, (layer, g) in enumerate(zip(layers, grads)):
            z = acts[layer].detach().float().cpu()
            shape = (*z.shape[:2], d.n_heads, d.head_dim)
            delta = (ablated[layer] - z.reshape(shape)) * g.float().cpu().reshape(shape) * mask
            out[li, :, rows] = delta.sum(dim=(1, 3)).T.double().numpy()
    return out


@dataclass
class Settled:
    """One check of the stopping rule: the layers (indices into the swept layers) still to verify, none when
    the claims are settled; the margin and the k-th exact KL it used."""

    pending: list[int]
    margin: float
    kth: float


def settle(exact: np.ndarray, estimate: np.ndarray, verified: np.ndarray, k: int, margin: bool = True) -> Settled:
    """The stopping rule (module docstring). ``exact``, ``estimate``: [family, layer index, head] family-mean
    exact KL (read only where ``verified``) and |AtP| estimate; ``verified``: [layer index] bool. ``margin=False``
    trusts the estimate's scale as it is (``ρ`` = 1): the perturbation that shows the margin is needed."""
    ver = np.broadcast_to(verified[None, :, None], exact.shape)
    vals = np.where(ver, exact, -np.inf)
    flat = np.sort(vals, axis=None)[::-1]
    kth = float(flat[min(k, int(ver.sum())) - 1]) if ver.any() else -np.inf
    best = vals.max(axis=(1, 2))  # each family's strongest verified cell
    claimed = ver & ((vals >= kth) | (vals == best[:, None, None]))
    rho = 1.0
    if margin and claimed.any():
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(
                estimate > 0, exact / np.where(estimate > 0, estimate, 1.0), np.where(exact > 0, np.inf, 0.0)
            )
        rho = max(1e-300, float(ratio[claimed].max()))
    if ver.all():
        return Settled([], rho, kth)
    bound = np.where(ver, -np.inf, rho * estimate if np.isfinite(rho) else np.inf)
    floor = np.minimum(kth, best)[:, None, None]  # the weakest claim an unverified cell could displace
    # per layer, its highest bound above the claim it threatens (a tie changes no claimed value)
    over = np.where(bound > floor, bound, -np.inf).max(axis=(0, 2))
    pending = [int(i) for i in np.argsort(-over, kind="stable") if over[i] > -np.inf]
    return Settled(pending[: max(1, int(verified.sum()))], rho, kth)


@dataclass
class Verification:
    exact: np.ndarray  # [family, layer index, head] family-mean KL, NaN where not verified
    verified: list[int]  # layer indices, in the order verified
    rounds: int
    margin: float


def verify(estimate: np.ndarray, k: int, sweep: Callable[[list[int]], np.ndarray], margin: bool = True) -> Verification:
    """Exact ablation of the layers holding the top-``k`` estimated cells, widened by :func:`settle` until the
    claims are settled. ``sweep(layer indices)`` returns their exact [family, len(indices), head] family-mean KL."""
    n_fam, n_layers, n_heads = estimate.shape
    exact = np.full(estimate.shape, np.nan)
    verified = np.zeros(n_layers, bool)
    order: list[int] = []
    first = np.argsort(-estimate, axis=None, kind="stable")[:k]
    todo = list(dict.fromkeys(int(np.unravel_index(i, estimate.shape)[1]) for i in first))
    rounds, rho = 0, 1.0
    while todo:
        exact[:, todo] = sweep(todo)
        verified[todo] = True
        order += todo
        rounds += 1
        step = settle(exact, estimate, verified, k, margin)
        todo, rho = step.pending, step.margin
    return Verification(exact, order, rounds, rho)
