"""Sequence packing: a left-padded chunk of prompts laid out as a few rows of back-to-back sequences.

A sweep's prompts differ in length (4-20 tokens for the task families), so a left-padded chunk spends much of
its matmul work on padding (45% on the benchmark's 40 prompts). Packed, every row of ``[R, L]`` holds whole
sequences one after another, each with position ids from 0; the stock decoder, given ``position_ids`` and no
``attention_mask``, detects the restarts and builds a block-diagonal causal mask
(``transformers.masking_utils.find_packed_sequence_indices``), so no sequence sees another. The tail of a row
not filled by sequences is one filler sequence of zero embeddings whose outputs are discarded.

``pack``/``unpack`` move any ``[B, T, w]`` tensor in the padded layout to ``[R, L, w]`` and back (padding
positions come back as zeros), so interventions written for the padded layout run unchanged on a packed
forward.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from atlas_core import AtlasError


@dataclass
class Packing:
    """Where each real token of a left-padded ``[B, T]`` chunk sits in the packed ``[R, L]`` rows."""

    batch: int
    seq: int
    src: torch.Tensor  # [R * L]: flat index into the padded chunk (B * T), or B * T for a filler position
    position_ids: torch.Tensor  # [R, L]
    last: torch.Tensor  # [B]: flat packed index of each chunk row's last token
    lengths: list[int]  # real tokens per chunk row

    @property
    def shape(self) -> tuple[int, int]:
        return self.position_ids.shape[0], self.position_ids.shape[1]

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T, w]`` (padded layout) -> ``[R, L, w]``; filler positions hold zeros."""
        flat = torch.cat([x.reshape(self.batch * self.seq, -1), x.new_zeros(1, x.shape[-1])])
        return flat[self.src].view(*self.shape, x.shape[-1])

    def unpack(self, y: torch.Tensor) -> torch.Tensor:
        """``[R, L, w]`` -> ``[B, T, w]`` (padded layout; padding positions zero)."""
        out = y.new_zeros(self.batch * self.seq + 1, y.shape[-1])
        out[self.src] = y.reshape(-1, y.shape[-1])
        return out[:-1].view(self.batch, self.seq, -1)

    def wrap(self, fn: Callable[[torch.Tensor], torch.Tensor | None]) -> Callable[[torch.Tensor], torch.Tensor | None]:
        """An activation function written for the padded layout, run on a packed activation."""

        def packed(act: torch.Tensor) -> torch.Tensor | None:
            new = fn(self.unpack(act))
            return None if new is None else self.pack(new)

        return packed


def _first_fit(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Rows (lists of chunk-row indices) by first-fit decreasing."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(capacity - lengths[i])
    return rows


def plan(lengths: Sequence[int], seq: int, row_tokens: int, device: torch.device | str = "cpu") -> Packing:
    """Pack rows of a left-padded ``[len(lengths), seq]`` chunk into as few rows as ``row_tokens`` per row
    allows (a longer sequence gets a row of its own length), every row as long as the fullest."""
    if row_tokens < 1:
        raise AtlasError(f"packed rows need at least one token each (got row_tokens={row_tokens})")
    if not lengths or min(lengths) < 1 or max(lengths) > seq:
        raise AtlasError(f"cannot pack sequence lengths {list(lengths)[:8]} into a padded width of {seq}")
    total, longest = sum(lengths), max(lengths)
    n_rows = math.ceil(total / max(row_tokens, longest))
    capacity = max(longest, math.ceil(total / n_rows))
    rows = _first_fit(lengths, capacity)
    while len(rows) > n_rows:  # first fit left a sequence over: widen the rows a little
        capacity += 1
        rows = _first_fit(lengths, capacity)
    width = max(sum(lengths[i] for i in row) for row in rows)
    filler = len(lengths) * seq
    src: list[int] = []
    pos: list[int] = []
    last = [0] * len(lengths)
    for r, row in enumerate(rows):
        for i in row:
            n = lengths[i]
            src += range(i * seq + seq - n, i * seq + seq)
            pos += range(n)
            last[i] = len(src) - 1
        gap = width * (r + 1) - len(src)
        src += [filler] * gap
        pos += range(gap)
    return Packing(
        len(lengths),
        seq,
        torch.tensor(src, device=device),
        torch.tensor(pos, device=device).view(len(rows), width),
        torch.tensor(last, device=device),
        list(lengths),
    )
