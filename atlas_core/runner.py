"""The sweep runner: last-position log-probabilities for every (variant, prompt), fast.

- One clean pass per prompt set caches the residual entering every layer and the clean
  log-probabilities (fp32).
- Variants are batched: one forward carries many variants, each row with its own intervention, in
  chunks sized to a memory budget; prompts are left-padded with attention masks and position ids so
  that batched results equal one-at-a-time results.
- Clean-prefix reuse: a variant whose first touched layer is L starts from the cached residual
  entering L and runs only layers L and up (the stock forward over a layer window); when only residual
  ablations/steers/patches touch L, they are applied to the cached residual after L and the run starts at
  L + 1.
- Staggered entry: variants that end at the same layer share chunks whatever their start layers; a variant's
  rows join the chunk's forward at their start layer (one stock forward per stretch between two start layers),
  so a layer sweep, one variant per start layer, still runs chunks of many variants: larger matmuls, and the
  LM head on a chunk's rows at once, with no layer run for a row that the clean prefix already gives.
- Packing: each sweep forward (and the clean pass) runs its prompts' sequences back to back in a few rows,
  without padding (``atlas_core.packing``: the stock decoder's packed-sequence mask keeps them apart);
  interventions still see the padded layout. Rows go shortest prompt first and a chunk drops the padding
  columns none of its prompts needs; per-prompt values (donors, patches) are right-aligned, so they follow.
- Only the last position reaches the LM head.

The prompt set's forwards (the clean pass, recorded activations, plans and packed chunk forwards) are
:class:`~atlas_core.prompt_set.PromptSet`'s, which :class:`Runner` extends with variants and sweeps.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from atlas_core import AtlasError
from atlas_core.checkpoints import Checkpoints, Slot, digest_strings
from atlas_core.forward import check_prompts
from atlas_core.interventions import Ablate, Variant, exit_layer, validate
from atlas_core.integrity import check_finite
from atlas_core.metrics import kl_divergence
from atlas_core.models.adapters import lm_head
from atlas_core.sites import Site, validate_site
from atlas_core.prompt_set import PromptSet


@dataclass
class SweepStats:
    """Per (variant, prompt) metrics of a sweep against a reference distribution (default: clean)."""

    names: list[str]
    kl: np.ndarray  # [V, P] nats
    argmax_match: np.ndarray  # [V, P] bool
    topk_overlap: np.ndarray  # [V, P] in [0, 1]
    target_prob: np.ndarray | None  # [V, P]
    ref_target_prob: np.ndarray | None  # [P]
    argmax: np.ndarray  # [V, P] token ids


class SweepBackend(Protocol):
    """Where ``Runner.sweep`` sends the sweeps it does not run itself (``distributed.RayPool``)."""

    def takes(self, runner: Runner) -> bool: ...

    def sweep(
        self,
        runner: Runner,
        variants: Sequence[Variant],
        targets: Sequence[int] | None,
        k: int,
        reference_logprobs: torch.Tensor | None,
    ) -> SweepStats: ...


SweepObserver = Callable[["Runner", Sequence[Variant], SweepStats], None]
_KEEP: Any = object()


@dataclass
class Sweeping:
    """How the sweeps of a run are carried out, handed explicitly to every runner of the run (through the
    experiment context): where they run (``backend``: a Ray pool; None: here), where their partial metrics are
    saved so an interrupted run resumes (``checkpoints``: the slot folder of the experiment running; None:
    nowhere), and who is told of each finished sweep (``observers``: the golden recorder)."""

    backend: SweepBackend | None = None
    checkpoints: Checkpoints | None = None
    observers: list[SweepObserver] = field(default_factory=list)

    @contextmanager
    def lent(
        self,
        *,
        backend: SweepBackend | None = _KEEP,
        checkpoints: Checkpoints | None = _KEEP,
        observer: SweepObserver | None = None,
    ) -> Iterator[Sweeping]:
        """Set ``backend`` and ``checkpoints`` (those given) and add ``observer`` for the block; on leaving it,
        however it is left, every field is as it was."""
        saved = self.backend, self.checkpoints, list(self.observers)
        if backend is not _KEEP:
            self.backend = backend
        if checkpoints is not _KEEP:
            self.checkpoints = checkpoints
        if observer is not None:
            self.observers.append(observer)
        try:
            yield self
        finally:
            self.backend, self.checkpoints, self.observers[:] = saved[0], saved[1], saved[2]


class Runner(PromptSet):
    """Sweeps over one prompt set on one model. Construct once; the clean pass is cached."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer,
        prompts: Sequence[str],
        *,
        memory_mb: int = 1024,
        reference_prompts: Sequence[str] | None = None,
        seed: int = 0,
        progress: bool = False,
        sweeping: Sweeping | None = None,
    ):
        super().__init__(model, tokenizer, prompts, memory_mb=memory_mb)
        self.seed = seed
        self.progress = progress
        self.sweeping = Sweeping() if sweeping is None else sweeping
        self.reference_prompts = check_prompts(reference_prompts) if reference_prompts is not None else None
        self._reference: Runner | None = None
        self._means: dict[Site, torch.Tensor] = {}

    def mean_activation(self, site: Site) -> torch.Tensor:
        """Mean over every real (non-pad) token of the reference prompts at ``site``: [width]."""
        if site not in self._means:
            ref = self.reference
            acts = ref.record([site])[site].float()
            mask = ref.enc.attention_mask.bool()
            self._means[site] = acts[mask].mean(0).to(acts.dtype)
        return self._means[site]

    @property
    def reference(self) -> "Runner":
        if self.reference_prompts is None:
            return self
        if self._reference is None:
            self._reference = Runner(
                self.model,
                self.tokenizer,
                self.reference_prompts,
                memory_mb=self.memory_mb,
                seed=self.seed,
                sweeping=self.sweeping,
            )
        return self._reference

    def resample_donors(self, site: Site) -> torch.Tensor:
        """[P, T, width]: for each prompt, the activations of a different reference prompt (seeded),
        right-aligned to this run's positions; donor pad positions hold the reference mean."""
        self._check_resample()
        ref = self.reference
        acts = ref.record([site])[site].clone()
        mean = self.mean_activation(site)
        acts[~ref.enc.attention_mask.bool()] = mean.to(acts.dtype)
        rng = np.random.default_rng(self.seed)
        r = ref.enc.n
        if ref is self and r > 1:
            donors = (np.arange(r) + rng.integers(1, r, size=r)) % r  # never a prompt's own activations
        else:
            donors = rng.integers(0, r, size=self.enc.n)
        picked = acts[torch.as_tensor(donors, device=acts.device)]
        t, tr = self.enc.seq, ref.enc.seq
        if tr >= t:
            return picked[:, tr - t :]
        pad = mean.to(acts.dtype).expand(picked.shape[0], t - tr, -1)
        return torch.cat([pad, picked], dim=1)

    def _check_resample(self) -> None:
        if self.reference_prompts is None and self.enc.n < 2:
            raise AtlasError(
                "resample ablation draws each prompt's donor from the other prompts: with one prompt "
                "and no reference_prompts there is none (pass reference_prompts or more prompts)"
            )

    # ---- variants -------------------------------------------------------------------------------
    def check(self, variants: Sequence[Variant]) -> list[int | None]:
        """Every check on ``variants`` that needs no forward (mean vectors and resample donors are drawn
        later): bad input fails here, before the clean pass or any sweep forward runs. Returns each variant's
        exit layer (None: the last layer)."""
        if not variants:
            raise AtlasError("no variants to run: pass at least one Variant")
        exits: list[int | None] = []
        for v in variants:
            if not isinstance(v, Variant):
                raise AtlasError(
                    f"expected a Variant, got {type(v).__name__}: wrap interventions as "
                    "Variant(name, (intervention, ...))"
                )
            for iv in v.interventions:
                if isinstance(iv, Ablate) and iv.value is None and iv.mode in ("mean", "resample"):
                    validate_site(iv.site, self.dims)
                    if iv.mode == "resample":
                        self._check_resample()
                else:
                    validate(iv, self.dims, self.enc.n, self.enc.seq)
            exits.append(exit_layer(tuple(v.interventions)))
        return exits

    def resolve(self, variant: Variant) -> Variant:
        """``variant`` (checked) with its mean vectors and resample donors filled in."""
        ivs = []
        for iv in variant.interventions:
            if isinstance(iv, Ablate) and iv.value is None and iv.mode in ("mean", "resample"):
                value = self.mean_activation(iv.site) if iv.mode == "mean" else self.resample_donors(iv.site)
                iv = Ablate(iv.site, iv.mode, value)
            ivs.append(iv)
        return Variant(variant.name, tuple(ivs))

    def logprobs(self, variants: Sequence[Variant], progress: bool | None = None) -> torch.Tensor:
        """[len(variants), P, vocab] fp32 last-position log-probabilities."""
        exits = self.check(variants)
        out = torch.empty(
            (len(variants), self.enc.n, self.clean_logprobs.shape[-1]), dtype=torch.float32, device=self.device
        )
        for vi, idx, lp in self._run(variants, exits, progress):
            out[vi, idx.to(self.device)] = lp
        return out

    def sweep(
        self,
        variants: Sequence[Variant],
        targets: Sequence[int] | None = None,
        k: int = 5,
        reference_logprobs: torch.Tensor | None = None,
        progress: bool | None = None,
    ) -> SweepStats:
        """Metrics per (variant, prompt) without keeping full distributions, run where ``self.sweeping`` says
        and told to its observers."""
        exits = self.check(variants)
        if targets is not None and len(targets) != self.enc.n:
            raise AtlasError(f"{len(targets)} targets for {self.enc.n} prompts")
        if targets is not None:
            vocab = lm_head(self.model).weight.shape[0]
            bad = [t for t in targets if not 0 <= int(t) < vocab]
            if bad:
                raise AtlasError(f"target token ids {bad[:5]} outside the vocabulary 0..{vocab - 1}")
        if reference_logprobs is not None and reference_logprobs.shape[0] != self.enc.n:
            raise AtlasError(
                f"reference log-probs cover {reference_logprobs.shape[0]} prompts; the run has {self.enc.n}"
            )
        backend = self.sweeping.backend  # `atlas run --ray`: the variants go to Ray actors in shards
        if backend is not None and backend.takes(self):
            stats = backend.sweep(self, variants, targets, k, reference_logprobs)
        else:
            stats = self._sweep_here(variants, exits, targets, k, reference_logprobs, progress)
        for observe in list(self.sweeping.observers):
            observe(self, variants, stats)
        return stats

    def _sweep_here(
        self,
        variants: Sequence[Variant],
        exits: list[int | None],
        targets: Sequence[int] | None,
        k: int,
        reference_logprobs: torch.Tensor | None,
        progress: bool | None,
    ) -> SweepStats:
        ref = self._reference_logprobs(reference_logprobs)
        nv = len(variants)
        arrays, slot = self.saved(variants, targets, k, reference_logprobs)
        kl, am, tk, arg, tp, done = (
            arrays["kl"],
            arrays["argmax_match"],
            arrays["topk_overlap"],
            arrays["argmax"],
            arrays.get("target_prob"),
            arrays["done"],
        )
        todo = [i for i in range(nv) if not done[i].all()]  # a resumed sweep redoes only unfinished variants
        tid = torch.as_tensor(list(targets), device=self.device) if targets is not None else None
        ref_arg, ref_top = ref.argmax(-1), ref.topk(k, dim=-1).indices  # once, not per chunk
        for ti, idx, lp in self._run([variants[i] for i in todo], [exits[i] for i in todo], progress) if todo else ():
            vi, at, ii = todo[ti], idx.to(self.device), idx.numpy()
            kl[vi, ii] = kl_divergence(ref[at], lp).cpu().numpy()
            lp_arg = lp.argmax(-1)  # as metrics.argmax_match / topk_overlap, with the reference's part cached
            am[vi, ii] = (ref_arg[at] == lp_arg).cpu().numpy()
            top = lp.topk(k, dim=-1).indices
            tk[vi, ii] = (ref_top[at, :, None] == top[:, None, :]).any(-1).float().mean(-1).cpu().numpy()
            arg[vi, ii] = lp_arg.cpu().numpy()
            if tp is not None:
                tp[vi, ii] = lp.gather(-1, tid[at, None]).squeeze(-1).exp().cpu().numpy()
            done[vi, ii] = 1
            if slot is not None:
                slot.save(arrays)
        if slot is not None and todo:
            slot.save(arrays, force=True)
        return self.stats(variants, arrays, targets, reference_logprobs)

    def stats(
        self,
        variants: Sequence[Variant],
        arrays: dict[str, np.ndarray],
        targets: Sequence[int] | None,
        reference_logprobs: torch.Tensor | None,
    ) -> SweepStats:
        """The ``SweepStats`` of a finished sweep's arrays (see ``saved``), run here or on a backend: a non-finite
        KL is an error; the reference target probabilities come from this runner's reference."""
        names = [v.name for v in variants]
        check_finite(arrays["kl"], "KL", names, self.prompts)
        ref_tp = None
        if targets is not None:
            ref = self._reference_logprobs(reference_logprobs)
            tid = torch.as_tensor(list(targets), device=self.device)
            ref_tp = ref.gather(-1, tid[:, None]).squeeze(-1).exp().cpu().numpy()
        return SweepStats(
            names,
            arrays["kl"],
            arrays["argmax_match"].astype(bool),
            arrays["topk_overlap"],
            arrays.get("target_prob"),
            ref_tp,
            arrays["argmax"],
        )

    def _reference_logprobs(self, reference_logprobs: torch.Tensor | None) -> torch.Tensor:
        """What a sweep's metrics compare against: ``reference_logprobs`` when given, else the clean run."""
        return self.clean_logprobs if reference_logprobs is None else reference_logprobs.to(self.device).float()

    def saved(self, variants, targets, k, reference_logprobs) -> tuple[dict[str, np.ndarray], Slot | None]:
        """A sweep's per-(variant, prompt) arrays (``done`` marks finished cells), reloaded from its checkpoint
        slot when one holds them (zeros otherwise), and the slot (None when no checkpoints are lent)."""
        nv, p = len(variants), self.enc.n
        arrays = {
            "kl": np.zeros((nv, p), np.float64),
            "argmax_match": np.zeros((nv, p), np.uint8),
            "topk_overlap": np.zeros((nv, p), np.float64),
            "argmax": np.zeros((nv, p), np.int64),
            "done": np.zeros((nv, p), np.uint8),
        }
        if targets is not None:
            arrays["target_prob"] = np.zeros((nv, p), np.float64)
        slot = self._slot(variants, targets, k, reference_logprobs)
        if slot is not None:
            arrays = slot.load({name: a.shape for name, a in arrays.items()}) or arrays
        return arrays, slot

    def _slot(self, variants, targets, k, reference_logprobs) -> Slot | None:
        """This sweep's checkpoint slot when the run lent checkpoints (``atlas run``: one folder per experiment)."""
        ck = self.sweeping.checkpoints
        if ck is None:
            return None
        ref = "clean"
        if reference_logprobs is not None:
            ref = hashlib.sha256(reference_logprobs.detach().float().cpu().numpy().tobytes()).hexdigest()
        return ck.slot(
            {
                "variants": digest_strings([v.name for v in variants]),
                "prompts": digest_strings(self.prompts),
                "targets": None if targets is None else [int(t) for t in targets],
                "k": k,
                "reference": ref,
            }
        )

    def _run(self, variants: Sequence[Variant], exits: Sequence[int | None], progress: bool | None):
        """Yield (variant index, prompt indices [CPU long tensor], [len(indices), vocab] log-probs) until every
        variant has every prompt. ``variants`` are checked, ``exits`` their exit layers (``check``)."""
        resolved = [self.resolve(v) for v in variants]
        resid = self.residuals
        plans = [self.plan(v, stop) for v, stop in zip(resolved, exits)]
        # variants that end at one layer share chunks, in order of their start layer (see forward_chunk)
        groups: dict[tuple[int, bool], list[int]] = defaultdict(list)
        for i, plan in enumerate(plans):
            groups[(plan.end, plan.untouched)].append(i)
        per_chunk = self.rows_per_chunk()
        blocks = self.blocks()
        total = len(variants) * self.enc.n
        bar = tqdm(
            total=total,
            desc="sweep",
            unit="row",
            disable=not (self.progress if progress is None else progress),
            leave=False,
        )
        for (end, untouched), idxs in sorted(groups.items()):
            starts = sorted({plans[vi].start for vi in idxs})
            segments = [(vi, idx, t0) for s in starts for idx, t0 in blocks for vi in idxs if plans[vi].start == s]
            chunk: list[tuple[int, torch.Tensor, int]] = []
            rows = 0
            for seg in segments + [None]:
                if seg is not None and rows + len(seg[1]) <= per_chunk:  # the next segment fits the budget
                    chunk.append(seg)
                    rows += len(seg[1])
                    continue
                if chunk:
                    lp = self.forward_chunk(plans, chunk, end, resid, untouched)
                    r0 = 0
                    for vi, idx, *_ in chunk:
                        yield vi, idx, lp[r0 : r0 + len(idx)]
                        r0 += len(idx)
                    bar.update(rows)
                chunk, rows = ([seg], len(seg[1])) if seg is not None else ([], 0)
        bar.close()
