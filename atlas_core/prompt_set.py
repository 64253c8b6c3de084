"""One prompt set on one model and the forwards a :class:`~atlas_core.runner.Runner` sweeps with: the prompts
encoded, the clean pass (the residual entering every layer and the clean log-probabilities, cached), clean
activations recorded at any site, the plan of a resolved variant (where its forward starts and ends) and the
forward of a chunk of planned variants from the cached residual, packed (``atlas_core.packing``). Apart from the
runner, which adds the variants' checks and resolution, the sweeps, their metrics, checkpoints and backends."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from atlas_core import packing
from atlas_core.forward import check_prompts, encode, logprobs_of_hidden
from atlas_core.hooks import hooked
from atlas_core.interventions import (
    Ablate,
    ExitAt,
    Intervention,
    Patch,
    Steer,
    Variant,
    act_fn,
    first_layer,
    hook_specs,
    sites_of,
)
from atlas_core.integrity import check_finite
from atlas_core.models.adapters import decoder, entry_hook, final_norm, hidden_arg, layer_window, text_config
from atlas_core.sites import Site, dims, site_hook, validate_site
from atlas_core.work import declared


# Padding is cut by packing, not by bucketing prompts by length (chunks cut where a prompt would be padded beyond
# 1.25x its length): on the benchmark sweep (CPU, Coder-0.5B, 40 task prompts, interleaved) bucketing ran at
# 0.75x the padded chunks' speed (smaller batches cost more than the padding saved), packing at 1.39x.
# Tokens per packed row of a sweep forward (see ``atlas_core.packing``); 0 runs sweep chunks left-padded (the
# benchmark's comparison). Measured as above on 4 layer variants: 128 and 256 alike (1.39x padded), 512 1.29x
# (the score matrix grows with the row); tests_atlas/bench's whole sweep twice: 1.71x padded at 256.
PACK_TOKENS = 256


@dataclass(frozen=True)
class Plan:
    """How a resolved variant runs: decoder layers ``start..end-1`` from the cached clean residual entering
    ``start``, after ``pre`` is applied to that residual, with ``hooks`` on the layers that run."""

    start: int
    end: int
    pre: tuple[Intervention, ...]
    hooks: tuple[Intervention, ...]

    @property
    def untouched(self) -> bool:
        return not self.pre and not self.hooks


class PromptSet:
    """One prompt set on one model: its clean pass (cached), clean activations, chunk sizes and the forward of a
    chunk of planned variants."""

    def __init__(self, model: nn.Module, tokenizer, prompts: Sequence[str], *, memory_mb: int = 1024):
        self.model = model
        self.tokenizer = tokenizer
        self.prompts = check_prompts(prompts)
        self.device = next(model.parameters()).device
        self.dims = dims(model)
        self.enc = encode(tokenizer, self.prompts, self.device)
        self.memory_mb = memory_mb
        self._resid_in: torch.Tensor | None = None
        self._clean: torch.Tensor | None = None
        self._acts: dict[Site, torch.Tensor] = {}

    # ---- the clean pass -------------------------------------------------------------------------
    def _clean_pass(self) -> None:
        n = self.dims.n_layers
        resid = []
        logps = []
        for p0, p1 in self._prompt_blocks():
            store: dict[int, torch.Tensor] = {}

            def specs(pk: packing.Packing):
                def keep(idx):
                    def fn(act):
                        store[idx] = pk.unpack(act.detach())
                        return None

                    return fn

                out = [entry_hook(self.model, keep(-1))]  # after learned positions too (GPT-2)
                return out + [site_hook(self.model, Site("resid", layer), keep(layer)) for layer in range(n)]

            last = self._packed_pass(p0, p1, specs)
            with torch.inference_mode():
                logps.append(logprobs_of_hidden(self.model, last))
            resid.append(torch.stack([store[-1]] + [store[layer] for layer in range(n)]))
        self._resid_in = torch.cat(resid, dim=1)  # [n_layers + 1, P, T, d]: entering layer L = index L
        self._clean = torch.cat(logps)
        nan = torch.isnan(self._clean).any(-1).cpu().numpy()
        check_finite(np.where(nan, np.nan, 0.0)[None], "the clean log-probability", ["clean"], self.prompts)

    def _packed_pass(self, p0: int, p1: int, specs) -> torch.Tensor:
        """The stock decoder over prompts ``p0..p1-1``, packed (see ``atlas_core.packing``), with the hooks
        ``specs(packing)`` returns; each prompt's last hidden state [p1 - p0, d]. Activations recorded
        through ``packing.unpack`` come back in the padded layout, zero at padding positions."""
        lengths = self.enc.lengths[p0:p1]
        pk = packing.plan(lengths, self.enc.seq, PACK_TOKENS or self.enc.seq, self.device)
        ids = pk.pack(self.enc.input_ids[p0:p1, :, None])[..., 0]
        with torch.inference_mode(), hooked(specs(pk)), declared(lengths):
            hidden = decoder(self.model)(input_ids=ids, position_ids=pk.position_ids, use_cache=False).last_hidden_state
        return hidden.reshape(-1, hidden.shape[-1])[pk.last]

    @property
    def clean_logprobs(self) -> torch.Tensor:
        if self._clean is None:
            self._clean_pass()
        return self._clean

    @property
    def residuals(self) -> torch.Tensor:
        """[n_layers + 1, P, T, d]: index L is the residual entering layer L (index n: after the last)."""
        if self._resid_in is None:
            self._clean_pass()
        return self._resid_in

    def record(self, sites: Sequence[Site]) -> dict[Site, torch.Tensor]:
        """Clean activations at ``sites``, each [P, T, width] in this runner's padded layout."""
        missing = [s for s in sites if s not in self._acts]
        for s in missing:
            validate_site(s, self.dims)
        if missing:
            if all(s.kind == "resid" for s in missing):
                for s in missing:
                    self._acts[s] = self.residuals[s.layer + 1]
            else:
                chunks: dict[Site, list[torch.Tensor]] = defaultdict(list)
                for p0, p1 in self._prompt_blocks():

                    def specs(pk: packing.Packing):
                        def keep(site):
                            def fn(act):
                                chunks[site].append(pk.unpack(act.detach()))
                                return None

                            return fn

                        return [site_hook(self.model, s, keep(s)) for s in missing]

                    self._packed_pass(p0, p1, specs)
                for s in missing:
                    self._acts[s] = torch.cat(chunks[s])
        return {s: self._acts[s] for s in sites}

    def last_residual(self, layer: int) -> torch.Tensor:
        """[P, d] residual after ``layer`` at each prompt's last token, fp32."""
        return self.residuals[layer + 1][:, -1].float()

    # ---- variants' plans and forwards ----------------------------------------------------------------
    def plan(self, variant: Variant, stop: int | None) -> Plan:
        """The plan of a resolved variant whose exit layer is ``stop`` (None: the last layer). When only
        residual-stream ablations, steers or patches touch the first touched layer L, that layer's output is the
        clean one, which is cached: ``pre`` applies them to it directly and the run starts at L + 1. A ``Noop``
        is never pre-applied: it exists to hook the stock layer as it runs (identity and overhead checks, or
        starting a run at L on a model changed outside the runner, as adapter ablation does)."""
        end = self.dims.n_layers if stop is None else stop + 1
        live = [(iv, first_layer(iv)) for iv in variant.interventions if not isinstance(iv, ExitAt)]
        live = [(iv, layer) for iv, layer in live if layer is not None and layer < end]
        if not live:
            return Plan(end, end, (), ())
        first = min(layer for _, layer in live)
        at_first = [iv for iv, layer in live if layer == first]
        if all(isinstance(iv, (Ablate, Steer, Patch)) and iv.site.kind == "resid" for iv in at_first):
            return Plan(first + 1, end, tuple(at_first), tuple(iv for iv, layer in live if layer != first))
        return Plan(first, end, (), tuple(iv for iv, _ in live))

    def bytes_per_row(self) -> int:
        """Bytes of activations one row of a forward takes (``atlas_core.plan.memory`` plans with it too)."""
        cfg = text_config(self.model)
        inter = getattr(cfg, "intermediate_size", 4 * self.dims.d_model)
        act = self.enc.seq * (8 * self.dims.d_model + 3 * inter) * 4
        return act + 4 * cfg.vocab_size * 4

    def rows_per_chunk(self) -> int:
        """Rows per forward: as many as ``memory_mb`` holds, at least one."""
        return max(1, (self.memory_mb << 20) // self.bytes_per_row())

    def _prompt_blocks(self) -> list[tuple[int, int]]:
        step = self.rows_per_chunk()
        return [(p0, min(p0 + step, self.enc.n)) for p0 in range(0, self.enc.n, step)]

    def blocks(self) -> list[tuple[torch.Tensor, int]]:
        """(prompt indices, first column any of them needs) per block of at most a chunk's rows, shortest
        prompts first."""
        order = sorted(range(self.enc.n), key=lambda i: (self.enc.lengths[i], i))
        step = self.rows_per_chunk()
        return [
            (
                torch.tensor(order[b : b + step], dtype=torch.long),
                self.enc.seq - max(self.enc.lengths[i] for i in order[b : b + step]),
            )
            for b in range(0, len(order), step)
        ]

    def forward_chunk(self, plans, chunk, end, resid, untouched: bool) -> torch.Tensor:
        """Last-position log-probabilities of a chunk's rows: each (variant index, prompt indices, first column)
        segment of ``chunk`` run per its plan in ``plans`` from the cached residual ``resid`` entering its start
        layer through layer ``end - 1``. Segments of several start layers share a chunk (``chunk`` is in order
        of start): a segment's rows join the forward at its start layer, each stretch between two start layers
        one stock forward over that layer window, so a sweep whose variants each start at their own layer (a
        layer sweep) still runs full chunks."""
        if untouched and end == self.dims.n_layers:  # nothing touched: the clean run itself, bit for bit
            return torch.cat([self.clean_logprobs[idx.to(self.device)] for _, idx, *_ in chunk])
        starts = [plans[vi].start for vi, *_ in chunk]
        if starts != sorted(starts):
            raise AssertionError("a chunk's segments must come in order of their start layer")
        t0 = min(seg[2] for seg in chunk)  # columns before t0 are padding in every row of this chunk
        x: torch.Tensor | None = None
        joined = 0
        layers_in = sorted(set(starts))
        for k, start in enumerate(layers_in):
            new = [seg for seg in chunk if plans[seg[0]].start == start]
            entering = self._enter(plans, new, start, resid, t0)
            carried = 0 if x is None else x.shape[0]
            x = entering if x is None else torch.cat([x, entering])
            joined += len(new)
            if k + 1 == len(layers_in):
                return self._forward_window(plans, chunk, start, end, x, carried, final=True)
            x = self._forward_window(plans, chunk[:joined], start, layers_in[k + 1], x, carried, final=False)
        raise AssertionError("unreachable: a chunk has at least one segment")

    def _enter(self, plans, segments, start, resid, t0) -> torch.Tensor:
        """The cached residual entering ``start`` for ``segments``' rows from column ``t0`` on, with each plan's
        ``pre`` interventions (residual interventions after layer ``start - 1``) applied."""
        with torch.inference_mode():
            x = torch.cat([resid[start, idx.to(self.device), t0:] for _, idx, *_ in segments])
            r0 = 0
            for vi, idx, *_ in segments:
                for iv in plans[vi].pre:
                    new = act_fn(iv, slice(r0, r0 + len(idx)), idx)(x)
                    x = x if new is None else new
                r0 += len(idx)
        return x

    def _forward_window(self, plans, segments, start, stop, x, carried: int, *, final: bool) -> torch.Tensor:
        """Layers ``start..stop-1`` over ``segments``' left-padded residual ``x`` [B, T, d] (its first ``carried``
        rows continue from the chunk's previous window), packed unless ``PACK_TOKENS`` is 0, each plan's hooks
        on its rows. ``final``: each row's last hidden state after the final norm, through the LM head to
        log-probabilities; else the residual after layer ``stop - 1`` (what the final norm receives) [B, T, d],
        zero at padding when packed."""
        if start == stop:  # nothing to run: the residual after layer stop-1 goes to the final norm
            with torch.inference_mode():
                return logprobs_of_hidden(self.model, final_norm(self.model)(x[:, -1:]))[:, -1]
        at = [idx.to(self.device) for _, idx, *_ in segments]
        lengths = [self.enc.lengths[i] for idx in at for i in idx.tolist()]
        pk = packing.plan(lengths, x.shape[1], PACK_TOKENS, self.device) if PACK_TOKENS else None
        specs = []
        r0 = 0
        for vi, idx, *_ in segments:
            rows = slice(r0, r0 + len(idx))
            if pk is None:
                specs += hook_specs(self.model, plans[vi].hooks, rows=rows, prompts=idx)
            else:
                for iv in plans[vi].hooks:
                    specs += [site_hook(self.model, s, pk.wrap(act_fn(iv, rows, idx))) for s in sites_of(iv)]
            r0 += len(idx)
        seen: list[torch.Tensor] = []
        if not final:
            specs.append(
                (final_norm(self.model), "pre", lambda module, args, kwargs: seen.append(hidden_arg(args, kwargs)))
            )
        if pk is None:
            t0 = self.enc.seq - x.shape[1]
            inputs = {
                "inputs_embeds": x,
                "attention_mask": torch.cat([self.enc.attention_mask[i, t0:] for i in at]),
                "position_ids": torch.cat([self.enc.position_ids[i, t0:] for i in at]),
            }
        else:
            inputs = {"inputs_embeds": pk.pack(x), "position_ids": pk.position_ids}
        with torch.inference_mode(), layer_window(self.model, start, stop), hooked(specs), declared(lengths, carried):
            hidden = decoder(self.model)(**inputs, use_cache=False).last_hidden_state
            if not final:
                return seen[0] if pk is None else pk.unpack(seen[0])
            last = hidden[:, -1] if pk is None else hidden.reshape(-1, hidden.shape[-1])[pk.last]
            return logprobs_of_hidden(self.model, last)
