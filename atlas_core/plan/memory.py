"""Memory per model replica for each experiment, and the GPUs it takes.

Per experiment: the weights at the run's dtype; the runner's residual cache (every layer's input for every prompt,
padded to the longest: the clean pass keeps it, and a sweep starts each variant from it) and the other caches the
experiment builds (the recorded sites of mean/resample ablation, steering's family and contrast runners, the
adapted model's runner); the activations of one sweep chunk, by the runner's own per-row budget
(``Runner.bytes_per_row``, what sizes its chunks); and for LoRA training the adapter with its gradient and AdamW
moments (fp32) and the training activations (gradient checkpointing keeps each layer's input; one layer is
recomputed at a time). Not counted: the allocator's slack, the CUDA context, torch's workspace; the usable share
of a GPU (``usable``) is the margin for those. Nor the process's runtime on CPU (python, torch, the tokenizer).
A measured peak is predicted from these bytes plus what a calibration run measured beyond its own planned bytes,
experiment by experiment (``timing.calibrate_memory``); the GPUs per replica are sized from the bytes here.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from types import SimpleNamespace
from typing import cast

from torch import nn

from atlas_core import AtlasError
from atlas_core.adapters_lora import spec_for
from atlas_core.models.adapters import layers
from atlas_core.plan.models import Shape
from atlas_core.plan.workload import PromptSet
from atlas_core.runner import Runner

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "t": 10**12,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
ADAM_BYTES = 16  # an fp32 adapter weight, its gradient and AdamW's two moments


def parse_size(text: str) -> int:
    """Bytes of ``141GB``, ``80GiB``, ``141G``, ``24000MB`` or a plain number of bytes."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    unit = m.group(2).lower() if m else None
    if m is None or unit not in _UNITS or float(m.group(1)) <= 0:
        raise AtlasError(f"GPU memory {text!r} is not a size: write it as 141GB, 80GiB or 24000MB")
    return int(float(m.group(1)) * _UNITS[unit])


def dtype_bytes(dtype: str) -> int:
    if dtype not in DTYPE_BYTES:
        raise AtlasError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPE_BYTES)}")
    return DTYPE_BYTES[dtype]


def bytes_per_row(model: nn.Module, shape: Shape, seq: int) -> int:
    """The runner's activation budget for one row of ``seq`` tokens (``Runner.bytes_per_row``, called on the
    fields it reads, so that the plan and the runner size a chunk the same way)."""
    fields = SimpleNamespace(model=model, dims=SimpleNamespace(d_model=shape.d_model), enc=SimpleNamespace(seq=seq))
    return Runner.bytes_per_row(cast(Runner, fields))


def rows_per_chunk(model: nn.Module, shape: Shape, seq: int, memory_mb: int) -> int:
    """Rows per sweep forward, as ``Runner.rows_per_chunk`` sizes it to the profile's budget."""
    return max(1, (memory_mb << 20) // bytes_per_row(model, shape, seq))


def lora_params(model: nn.Module) -> int:
    """Weights of the study's adapter (rank 8 on the family's attention projections) over every layer."""
    spec = spec_for(model)
    first = layers(model)[0]
    per_layer = 0
    for name, module in first.named_modules():
        weight = getattr(module, "weight", None)
        if weight is not None and weight.dim() == 2 and any(name == t or name.endswith("." + t) for t in spec.targets):
            per_layer += spec.rank * (weight.shape[0] + weight.shape[1])
    return per_layer * len(layers(model))


@dataclass(frozen=True)
class Memory:
    """Bytes one replica holds at an experiment's peak."""

    weights: int
    caches: int
    activations: int
    lora: int

    @property
    def total(self) -> int:
        return self.weights + self.caches + self.activations + self.lora


def experiment_memory(
    name: str, model: nn.Module, shape: Shape, p: PromptSet, dtype: str, chunk: int, ablation_modes: tuple[str, ...]
) -> Memory:
    b = dtype_bytes(dtype)
    n, d = shape.n_layers, shape.d_model
    t = max(p.all)

    def cache(lengths, planes=n + 1) -> int:  # a runner's padded [planes, P, T, d] cache
        return planes * len(lengths) * max(lengths) * d * b

    base = cache(p.all)
    recorded = cache(p.all, n) if {"mean", "resample"} & set(ablation_modes) else 0
    extra = {
        "layer_ablation": recorded,
        "mlp_ablation": recorded,
        "steering": cache(p.family) + cache(p.contrast),
        "knockout": cache(p.family) + cache(p.contrast),
        "transfer": base,
        "adapter_ablation": base,
    }.get(name, 0)
    acts = chunk * bytes_per_row(model, shape, t)
    adapter = 0
    if name in ("lora_training", "transfer", "adapter_ablation"):
        adapter = lora_params(model) * 4
    if name == "lora_training":
        longest = max(a + c for a, c in p.pairs)
        adapter = lora_params(model) * ADAM_BYTES
        acts = n * longest * d * b + bytes_per_row(model, shape, longest)
    if name == "clean":
        acts = min(chunk, len(p.all)) * bytes_per_row(model, shape, t)
    return Memory(weights=shape.params * b, caches=base + extra, activations=acts, lora=adapter)


def gpus_per_replica(total: int, gpu_bytes: int, usable: float) -> int:
    """GPUs one replica spans: ceil(memory / usable GPU memory) (layers are never split across devices, so a
    replica near a multiple may need one more)."""
    return max(1, math.ceil(total / (gpu_bytes * usable)))
