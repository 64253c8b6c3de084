"""Useful work: FLOP by a stated formula, tokens and rows of every decoder forward an experiment runs.

``metering(model)`` hooks the stock decoder stack and the LM head (pytorch module hooks, removed on exit)
and adds up, for each forward, from the shapes it was called with:

- ``flop`` (useful): per decoder layer that runs, ``2 * P_layer`` per real (unmasked) token, where
  ``P_layer`` is the weight count of the layer's matrices (q, k, v, o projections and the MLP's gate, up,
  down; norms, rotary, activations and biases are not counted), plus ``2 * 2 * n_heads * head_dim`` per
  causal (query, key) pair of real tokens (``QK^T`` and ``AV``: a row of ``n`` real tokens has
  ``n (n + 1) / 2`` pairs); plus ``2 * d_model * vocab`` per row reaching the LM head.
- ``executed_flop``: the same with every padded position counted and the full ``T x T`` score matrix (what
  the matmuls do on the padded batch); ``executed_flop / flop`` is the padding overhead.
- A forward whose output requires gradients (training) counts twice: the backward through frozen weights computes
  the inputs' gradients only, one matmul per forward matmul (the LoRA matrices are not counted, nor is the
  forward that gradient checkpointing recomputes: it is not useful work).
- ``tokens``: real tokens entering a decoder forward (a sequence carried on from the sweep's previous forward,
  as staggered entry does, entered there: ``declared``'s ``carried``); ``token_layers``: real tokens times the
  layers they run through (prefix reuse lowers this, not ``tokens``); ``rows``: rows reaching the LM head.
- ``forward_seconds``: time inside decoder forwards (device synchronized on CUDA).
- ``memory``: the experiment's peak memory, measured (not counted) by ``MemoryMeter`` on the model's device: on
  CPU the process's resident set (Linux: writing ``5`` to ``/proc/self/clear_refs`` resets ``VmHWM``, the
  high-water mark of ``VmRSS``, to the current RSS at the start; ``VmHWM`` is read at the end), on CUDA
  ``torch.cuda``'s allocator peak (``reset_peak_memory_stats`` at the start, ``max_memory_allocated`` at the
  end; the caching allocator's reserved-but-free blocks and the CUDA context are not in it). It holds
  ``start_bytes`` (at the start), ``peak_bytes`` (the most during the block) and ``rise_bytes`` (their
  difference). Where the peak cannot be reset (no ``/proc/self/clear_refs``, not Linux, or not writable, as
  in some containers: the high-water mark would then be the whole process's, including earlier
  experiments'), the three are ``None`` and ``unknown`` says why. The CPU figure is the process's: another
  thread allocating at the same time would be counted (``atlas run`` runs one experiment at a time).
- ``load``: the machine's load averages (1, 5 and 15 minutes, ``os.getloadavg``) at the block's start and end,
  so that a measured time can be read beside what else the machine ran (``None`` where the OS has none).

``matmul_peak`` measures the machine's dense matmul rate once per (device, dtype, threads, torch) and
caches it, so a rate can be read as a fraction of what the hardware does on the kernel that dominates.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from atlas_core import AtlasError
from atlas_core.hooks import hooked
from atlas_core.models.adapters import decoder, layers, lm_head, text_config


@dataclass(frozen=True)
class FlopModel:
    """The per-model coefficients of the formula (see the module docstring)."""

    layer_weights: int  # weights of one decoder layer's matrices
    attn_width: int  # n_heads * head_dim
    head_weights: int  # d_model * vocab

    @classmethod
    def of(cls, model: nn.Module) -> "FlopModel":
        cfg = text_config(model)
        d, heads = cfg.hidden_size, cfg.num_attention_heads
        head_dim = getattr(cfg, "head_dim", None) or d // heads
        # the first layer's matrices as the stock module holds them (fused or split projections, gated or
        # plain MLP, Linear or GPT-2's Conv1D): every layer of a decoder family has the same ones
        layer = sum(p.numel() for p in layers(model)[0].parameters() if p.dim() == 2)
        head = lm_head(model).weight
        return cls(layer, heads * head_dim, head.shape[0] * head.shape[1])

    def layer_flop(self, tokens: int, pairs: int) -> int:
        """One decoder layer over ``tokens`` tokens with ``pairs`` (query, key) scores."""
        return 2 * self.layer_weights * tokens + 4 * self.attn_width * pairs

    def head_flop(self, rows: int) -> int:
        return 2 * self.head_weights * rows


@dataclass
class Work:
    """Accumulated work of one metered span (an experiment)."""

    flop: int = 0
    executed_flop: int = 0
    tokens: int = 0
    token_layers: int = 0
    rows: int = 0
    forwards: int = 0
    forward_seconds: float = 0.0
    memory: dict | None = None  # set when the metered block ends (``MemoryMeter.reading``); not summed
    load: dict | None = None  # load averages at the block's start and end (``metering``); not summed

    def add(self, other: "Work") -> None:
        for k, v in asdict(other).items():
            if k not in _MEASURED:
                setattr(self, k, getattr(self, k) + v)

    def record(self, wall_seconds: float, peak: dict | None = None) -> dict:
        """The provenance entry: the counts, the formula's name, the achieved rates and their share of ``peak``."""
        out = {
            **asdict(self),
            "forward_seconds": round(self.forward_seconds, 3),
            "formula": "atlas_core.work v1",
            "gflops_wall": _rate(self.flop, wall_seconds),
            "gflops_forward": _rate(self.flop, self.forward_seconds),
        }
        for k in _MEASURED:
            if out[k] is None:
                out.pop(k)  # not measured (a Work added up by hand): unknown, as in older records
        if peak:
            out["peak_gflops"] = peak["gflops"]
            out["peak_busy"] = bool(peak.get("busy", True))  # measured beside other work: the fraction reads high
            out["peak_fraction_wall"] = round(out["gflops_wall"] / peak["gflops"], 4) if out["gflops_wall"] else 0.0
        return out


_MEASURED = ("memory", "load")  # Work's fields measured over the block, not counted per forward


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _rate(flop: int, seconds: float) -> float:
    return round(flop / seconds / 1e9, 3) if seconds > 0 else 0.0


# Real sequence lengths of the next decoder forward when its inputs cannot say (a packed forward: no
# attention mask, and the filler at a row's end looks like a sequence), and how many of the first of them
# continue from an earlier forward; set by ``declared``.
_DECLARED: ContextVar[tuple[list[int], int] | None] = ContextVar("declared_lengths", default=None)


@contextmanager
def declared(lengths: list[int], carried: int = 0) -> Iterator[None]:
    """Tell a meter the real sequence lengths of the forwards inside the block, of which the first ``carried``
    continue from an earlier forward (their tokens entered there)."""
    token = _DECLARED.set((list(lengths), carried))
    try:
        yield
    finally:
        _DECLARED.reset(token)


def forward_work(
    fm: FlopModel,
    mask: torch.Tensor,
    n_layers: int,
    grad: bool = False,
    real: list[int] | None = None,
    carried: int = 0,
) -> Work:
    """The work of one decoder forward over a batch with attention ``mask`` [B, T] (1 = real token); ``real``:
    the sequence lengths when the rows hold several sequences each (packed), instead of the mask's counts;
    ``carried``: how many of the first sequences entered an earlier forward (their tokens are not counted)."""
    real = mask.sum(-1).tolist() if real is None else real
    b, t = mask.shape
    useful = n_layers * sum(fm.layer_flop(n, n * (n + 1) // 2) for n in real)
    executed = n_layers * b * fm.layer_flop(t, t * t)
    times = 2 if grad else 1
    return Work(
        flop=times * useful,
        executed_flop=times * executed,
        tokens=int(sum(real[carried:])),
        token_layers=int(sum(real)) * n_layers,
        forwards=1,
    )


class Meter:
    """Hooks counting the work of every forward of one model (see ``metering``)."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.fm = FlopModel.of(model)
        self.work = Work()
        self._cuda = next(model.parameters()).device.type == "cuda"
        self._t0: float | None = None
        self._pending: Work | None = None

    def _sync(self) -> None:
        if self._cuda:
            torch.cuda.synchronize()

    def _pre(self, module, args, kwargs):
        x = kwargs.get("input_ids")
        if x is None:
            x = kwargs.get("inputs_embeds")
        if x is None and args:
            x = args[0]
        if x is None:
            return None
        b, t = x.shape[0], x.shape[1]
        mask = kwargs.get("attention_mask")
        if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
            mask = torch.ones((b, t), dtype=torch.long)
        real, carried = _DECLARED.get() or (None, 0)
        self._pending = forward_work(self.fm, mask.detach().cpu(), len(layers(self.model)), real=real, carried=carried)
        self._sync()
        self._t0 = time.perf_counter()
        return None

    def _post(self, module, args, kwargs, output):
        if self._t0 is not None:
            self._sync()
            self.work.forward_seconds += time.perf_counter() - self._t0
            self._t0 = None
        if self._pending is not None:
            hidden = getattr(output, "last_hidden_state", None)
            self.work.add(self._pending)
            if hidden is not None and hidden.requires_grad:  # training: its backward is counted too
                self.work.flop += self._pending.flop
                self.work.executed_flop += self._pending.executed_flop
            self._pending = None
        return None

    def _head(self, module, args, kwargs, output):
        rows = output.shape[:-1].numel()
        times = 2 if output.requires_grad else 1
        self.work.rows += rows
        self.work.flop += times * self.fm.head_flop(rows)
        self.work.executed_flop += times * self.fm.head_flop(rows)
        return None


_KIB = 1024
CLEAR_REFS = "/proc/self/clear_refs"
PROC_STATUS = "/proc/self/status"


def _status_bytes(field: str) -> int:
    """``VmRSS`` or ``VmHWM`` of this process from ``/proc/self/status`` (reported in kB = KiB)."""
    with open(PROC_STATUS) as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * _KIB
    raise OSError(f"{PROC_STATUS} has no {field}")


class MemoryMeter:
    """Peak memory of one block on ``device`` (see the module docstring): ``start()`` then ``reading()``."""

    def __init__(self, device: torch.device):
        self.device = device
        self.start_bytes: int | None = None
        self.unknown: str | None = None

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start_bytes = torch.cuda.memory_allocated(self.device)
            return
        if self.device.type != "cpu":
            self.unknown = f"no peak memory measurement for device type {self.device.type!r}"
            return
        try:
            with open(CLEAR_REFS, "w") as fh:  # 5: reset the peak RSS (VmHWM) to the current RSS
                fh.write("5")
            self.start_bytes = _status_bytes("VmRSS")
        except OSError as exc:
            self.unknown = f"cannot reset the process's peak RSS ({CLEAR_REFS}: {exc.strerror or exc})"

    def reading(self) -> dict:
        out: dict = {"device": str(self.device), "start_bytes": None, "peak_bytes": None, "rise_bytes": None}
        if self.start_bytes is not None:
            try:
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                    peak = torch.cuda.max_memory_allocated(self.device)
                    out["measure"] = "torch.cuda.max_memory_allocated"
                else:
                    peak = _status_bytes("VmHWM")
                    out["measure"] = "VmHWM after clear_refs"
                out.update(start_bytes=self.start_bytes, peak_bytes=peak, rise_bytes=peak - self.start_bytes)
                return out
            except OSError as exc:
                self.unknown = f"cannot read the process's peak RSS ({PROC_STATUS}: {exc.strerror or exc})"
        out["unknown"] = self.unknown or "not measured"
        return out


@contextmanager
def metering(model: nn.Module) -> Iterator[Work]:
    """Count the work of every forward of ``model`` inside the block, measure its peak memory on the model's
    device and read the load averages (``Work.memory`` and ``Work.load``, set when the block ends); yields the
    live ``Work``."""
    meter = Meter(model)
    dec = decoder(model)
    mem = MemoryMeter(next(model.parameters()).device)
    load_start = _loadavg()
    mem.start()
    try:
        with hooked(
            [(dec, "pre", meter._pre), (dec, "forward", meter._post), (lm_head(model), "forward", meter._head)]
        ):
            yield meter.work
    finally:
        meter.work.memory = mem.reading()
        meter.work.load = {"start": load_start, "end": _loadavg()}


# ---- the machine's matmul peak ----------------------------------------------------------------------
PEAK_N = {"cpu": 1024, "cuda": 8192}  # square sizes that reach the dense kernel's plateau on each device
PEAK_SECONDS = 0.5


def _cache_file() -> Path:
    from atlas_core.models.offline import cache_root

    return cache_root() / "matmul-peak.json"


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            return next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), "cpu")
    except OSError:
        return os.uname().machine + " cpu"


def peak_key(device: torch.device, dtype: torch.dtype) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    return f"{name}|{str(dtype).removeprefix('torch.')}|threads={torch.get_num_threads()}|torch={torch.__version__}"


def measure_peak(device: torch.device, dtype: torch.dtype, n: int | None = None, seconds: float | None = None) -> dict:
    """Best rate of repeated ``n x n`` matmuls in ``dtype`` over about ``seconds`` (after one warm-up)."""
    n = PEAK_N.get(device.type, 4096) if n is None else n
    seconds = PEAK_SECONDS if seconds is None else seconds
    if n < 1 or seconds <= 0:
        raise AtlasError(f"matmul peak needs a positive size and duration (got n={n}, seconds={seconds})")
    load1 = _load1()  # before the matmuls, which add their own load
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.matmul(a, b)
    sync()
    best, spent = float("inf"), 0.0
    while spent < seconds:
        t0 = time.perf_counter()
        torch.matmul(a, b)
        sync()
        dt = time.perf_counter() - t0
        best, spent = min(best, dt), spent + dt
    return {
        "gflops": round(2 * n**3 / best / 1e9, 3),
        "n": n,
        "key": peak_key(device, dtype),
        "measured": time.time(),
        "load1": load1,
        "busy": device.type == "cpu" and busy(load1),
    }


BUSY_MARGIN = 1.0  # runnable threads beyond the cores a calibration leaves free: this process itself


def busy(load1: float | None) -> bool:
    """Whether other work shared the cores a CPU calibration runs on: the 1-minute load average above the cores
    its threads leave free plus this process itself (``BUSY_MARGIN``). An unknown load counts as busy."""
    if load1 is None:
        return True
    return load1 > max(0, (os.cpu_count() or 1) - torch.get_num_threads()) + BUSY_MARGIN


def _load1() -> float | None:
    load = _loadavg()
    return None if load is None else load[0]


def matmul_peak(device: torch.device | str, dtype: torch.dtype, refresh: bool = False) -> dict:
    """The cached matmul peak of this device, dtype, thread count and torch (measured on first use).

    A CPU peak measured while other work shared the cores (``busy``: its load average is stored with it) reads
    low, and every rate set against it high (185% "of peak" was seen). It is measured again by the first call
    on a quiet machine; the higher rate is kept (contention only lowers a measured peak), and from then on the
    entry counts as quiet. Entries written before the load was stored count as busy."""
    device = torch.device(device)
    key = peak_key(device, dtype)
    path = _cache_file()
    cache = {}
    if path.is_file():
        try:
            cache = json.loads(path.read_text())
        except json.JSONDecodeError:
            cache = {}  # a damaged cache is remeasured, never trusted
    held = cache.get(key)
    stale = held is not None and device.type == "cpu" and held.get("busy", True) and not busy(_load1())
    if refresh or held is None or stale:
        from atlas_core.results import atomic_write_text

        new = measure_peak(device, dtype)
        if stale and held is not None and held["gflops"] > new["gflops"]:
            new = {**held, "busy": new["busy"], "remeasured": new["measured"], "remeasured_load1": new["load1"]}
        cache[key] = new
        atomic_write_text(path, json.dumps(cache, indent=1))
    return cache[key]


def summary(rows: list[tuple[str, dict | None, float]]) -> str:
    """The table ``atlas run`` prints at the end: (experiment, work record or None, wall seconds) per row."""
    lines = [f"{'experiment':20s} {'wall s':>8s} {'useful GFLOP':>13s} {'GFLOP/s':>8s} {'of peak':>8s} {'padding':>8s}"]
    busy_peak = False
    for key, w, wall in rows:
        if not w:
            lines.append(f"{key:20s} {wall:8.1f} {'(not recorded)':>13s}")
            continue
        frac = w.get("peak_fraction_wall")
        pad = w["executed_flop"] / w["flop"] if w["flop"] else 1.0
        mark = "*" if frac is not None and w.get("peak_busy") else ""
        busy_peak = busy_peak or bool(mark)
        lines.append(
            f"{key:20s} {wall:8.1f} {w['flop'] / 1e9:13.1f} {w['gflops_wall']:8.2f} "
            f"{(f'{100 * frac:.1f}%{mark}' if frac is not None else '—'):>8s} {pad:7.2f}x"
        )
    if busy_peak:
        lines.append(
            "* of a matmul peak measured beside other work (it reads low): remeasured by a run on a quiet machine"
        )
    return "\n".join(lines)
