"""peft LoRA on the shared model, always inside a ``with`` block that leaves the base model pristine.

The loaded model is shared by a whole run: every other experiment must see the base weights and the
base forward. peft injects LoRA layers *into* the model it wraps, so each helper here attaches an
adapter for the duration of a block and, on exit (exceptions included), unloads it, removes any hook
peft or transformers registered, and restores every module's train/eval mode and every parameter's
``requires_grad``. Base weights are never touched (no merge), so base logits are bitwise unchanged.

- :func:`new_adapter`: a freshly initialised (seeded) LoRA adapter, for training;
- :func:`attached_adapter`: a saved adapter re-attached from its directory;
- :func:`training_mode`: train mode + gradient checkpointing + trainable LoRA weights, undone on exit;
- :func:`adapter_disabled_at`: the adapter switched off in one decoder layer only;
- :func:`adapter_norms`: per layer, the sum over its LoRA modules of ``||B A||_F * scaling``.
"""

from __future__ import annotations

import json
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn

from atlas_core import AtlasError
from atlas_core.integrity import CorruptFile, read_json, sha256_file
from atlas_core.models.adapters import adapter_for, layers

ADAPTER_CONFIG = "adapter_config.json"


@dataclass(frozen=True)
class LoraSpec:
    """The study's LoRA: rank 8, alpha 16, on the attention projections, no dropout."""

    rank: int = 8
    alpha: int = 16
    dropout: float = 0.0
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")

    def to_dict(self) -> dict:
        return {**asdict(self), "targets": list(self.targets)}


def spec_for(model: nn.Module, rank: int = 8, alpha: int = 16, dropout: float = 0.0) -> LoraSpec:
    """The LoRA spec with the architecture's projection names (``ArchAdapter.lora_targets``)."""
    return LoraSpec(rank, alpha, dropout, tuple(adapter_for(_base(model)).lora_targets))


def _lora_config(spec: LoraSpec):
    from peft import LoraConfig

    if spec.rank < 1 or spec.alpha <= 0 or not 0.0 <= spec.dropout < 1.0 or not spec.targets:
        raise AtlasError(f"invalid LoRA spec {spec}: need rank >= 1, alpha > 0, 0 <= dropout < 1, some targets")
    return LoraConfig(
        r=spec.rank,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=list(spec.targets),
        bias="none",
        task_type="CAUSAL_LM",
    )


def _base(model: nn.Module) -> nn.Module:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _tuner_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [(n, m) for n, m in model.named_modules() if isinstance(m, BaseTunerLayer)]


def lora_modules(model: nn.Module, layer: int) -> list[nn.Module]:
    """The LoRA-wrapped modules of decoder ``layer`` (empty when no adapter is attached)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in layers(model)[layer].modules() if isinstance(m, BaseTunerLayer)]


def _hook_ids(model: nn.Module) -> dict[int, tuple[set, set]]:
    return {id(m): (set(m._forward_hooks), set(m._forward_pre_hooks)) for m in model.modules()}


def _remove_new_hooks(model: nn.Module, before: dict[int, tuple[set, set]]) -> None:
    for m in model.modules():
        fwd, pre = before.get(id(m), (set(), set()))
        for key in [k for k in m._forward_hooks if k not in fwd]:
            m._forward_hooks.pop(key, None)
            m._forward_hooks_with_kwargs.pop(key, None)
            m._forward_hooks_always_called.pop(key, None)
        for key in [k for k in m._forward_pre_hooks if k not in pre]:
            m._forward_pre_hooks.pop(key, None)
            m._forward_pre_hooks_with_kwargs.pop(key, None)


def _strip_tuner_layers(model: nn.Module) -> None:
    """Put every LoRA-wrapped module's original layer back (idempotent; used if peft's unload failed
    or never got the chance, e.g. an exception inside peft's own constructor)."""
    for name, module in _tuner_layers(model):
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        if getattr(parent, child, None) is module:
            setattr(parent, child, module.get_base_layer())


@contextmanager
def _quiet() -> Iterator[None]:
    """peft reads transformers' deprecated ``is_gradient_checkpointing``: not ours to fix."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*deprecated and will be removed in v6.*", category=FutureWarning)
        yield


def _execution_device(module: nn.Module) -> torch.device | None:
    """The device accelerate runs ``module`` on (its ``AlignDevicesHook``), None when it placed no hook there."""
    hook = getattr(module, "_hf_hook", None)
    for h in [hook, *getattr(hook, "hooks", [])] if hook is not None else []:
        device = getattr(h, "execution_device", None)
        if device is not None:
            return torch.device(f"cuda:{device}" if isinstance(device, int) else device)
    return None


@contextmanager
def _adapters_on_execution_devices(model: nn.Module) -> Iterator[None]:
    """peft creates each adapter on the CPU (where it is initialised, so its seeded values do not depend on the
    placement), then moves it to the device of its base layer's weight. A layer accelerate offloaded
    (``--device-map`` with disk offload) holds its weight on the meta device and loads it only for its forward,
    so the adapter moved there would lose its values. For the block, each such weight is replaced by a
    one-element placeholder (expanded to its shape) on the device accelerate runs the layer on, where peft then
    puts the adapter; on exit the offloaded weights are back, with the ``requires_grad`` peft gave the
    placeholders. Models not placed by accelerate are left alone."""
    if not getattr(model, "hf_device_map", None):
        yield
        return
    swapped = []
    for module in model.modules():
        device = _execution_device(module)
        for name, param in list(module.named_parameters(recurse=False)):
            if device is not None and param.device.type == "meta":
                stand_in = nn.Parameter(torch.zeros(1, dtype=param.dtype, device=device).expand(param.shape))
                stand_in.requires_grad_(param.requires_grad)
                setattr(module, name, stand_in)
                swapped.append((module, name, param, stand_in))
    try:
        yield
    finally:
        for module, name, param, stand_in in swapped:
            param.requires_grad_(stand_in.requires_grad)
            setattr(module, name, param)


@contextmanager
def _peft_scope(model: nn.Module, make: Callable[[], nn.Module]) -> Iterator[nn.Module]:
    """Yield ``make()`` (a PeftModel over ``model``); restore ``model`` exactly on exit."""
    if hasattr(model, "get_base_model"):
        raise AtlasError("pass the base model, not a peft model: adapters are attached one at a time")
    if _tuner_layers(model):
        raise AtlasError("the model already carries adapter layers; leave the enclosing adapter block first")
    hooks = _hook_ids(model)
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.requires_grad) for p in model.parameters()]
    had_attrs = set(vars(model))
    peft_model = None
    try:
        with _quiet(), _adapters_on_execution_devices(model):
            peft_model = make()
        yield peft_model
    finally:
        try:
            if peft_model is not None:
                with _quiet():
                    peft_model.base_model.unload()
        finally:
            _strip_tuner_layers(model)
            _remove_new_hooks(model, hooks)
            for attr in ("peft_config", "_require_grads_hook", "_require_grads_hooks"):
                if attr not in had_attrs and attr in vars(model):
                    delattr(model, attr)
            for m, mode in modes:
                m.training = mode
            for p, flag in grads:
                p.requires_grad_(flag)


@contextmanager
def new_adapter(model: nn.Module, spec: LoraSpec, seed: int) -> Iterator[nn.Module]:
    """A fresh LoRA adapter on ``model`` (A seeded by ``seed``, B zero: the model's output is unchanged
    until trained). The global RNG is left as it was."""
    from peft import get_peft_model

    config = _lora_config(spec)
    config.fan_in_fan_out = adapter_for(model).fan_in_fan_out
    device = next(model.parameters()).device
    devices = (
        [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    )

    def make():
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            return get_peft_model(model, config)

    with _peft_scope(model, make) as peft_model:
        yield peft_model


def check_adapter_dir(adapter_dir: str | Path) -> Path:
    path = Path(adapter_dir)
    if not (path / ADAPTER_CONFIG).is_file():
        raise AtlasError(
            f"{path} holds no saved LoRA adapter ({ADAPTER_CONFIG} missing); run the lora_training "
            "experiment first (atlas run --experiments lora_training)"
        )
    return path


@contextmanager
def attached_adapter(model: nn.Module, adapter_dir: str | Path) -> Iterator[nn.Module]:
    """The adapter saved in ``adapter_dir`` attached to ``model`` (eval mode, frozen) for the block;
    unloaded on exit, so ``model`` is bitwise the base model again."""
    from peft import PeftModel

    path = check_adapter_dir(adapter_dir)
    read_meta(path)  # its files as saved, or a CorruptFile
    if getattr(model, "hf_device_map", None):
        make = lambda: _load_placed(model, path)  # noqa: E731
    else:
        make = lambda: PeftModel.from_pretrained(model, str(path), is_trainable=False)  # noqa: E731
    with _peft_scope(model, make) as peft_model:
        peft_model.eval()
        yield peft_model


def _load_placed(model: nn.Module, path: Path) -> nn.Module:
    """``PeftModel.from_pretrained`` without its re-dispatch: on a model accelerate placed over the CPU or disk,
    peft removes every placement hook and places the model again by its own memory balance, which would leave
    the base model placed otherwise after the block. Here the saved config builds the adapter where each layer
    runs (``_adapters_on_execution_devices``) and the saved weights are loaded into it, every one accounted for."""
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    from safetensors.torch import load_file

    config = LoraConfig.from_pretrained(str(path))
    config.inference_mode = True
    with torch.random.fork_rng(devices=[]):  # the throwaway initial values draw from the RNG: leave it as it was
        peft_model = get_peft_model(model, config)
    weights = load_file(str(path / "adapter_model.safetensors"))
    loaded = set_peft_model_state_dict(peft_model, weights)
    missing = [k for k in loaded.missing_keys if "lora_" in k]
    if loaded.unexpected_keys or missing:
        raise AtlasError(
            f"the LoRA adapter in {path} does not fit this model ({len(loaded.unexpected_keys)} unexpected and "
            f"{len(missing)} missing tensors, e.g. {(loaded.unexpected_keys or missing)[0]}): train it on this model"
        )
    return peft_model


def _checkpointing(model: nn.Module, enable: bool) -> None:
    if enable:
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    elif hasattr(model, "activation_checkpointing_disable"):
        model.activation_checkpointing_disable()
    else:
        model.gradient_checkpointing_disable()


def _is_checkpointing(model: nn.Module) -> bool:
    return any(getattr(m, "gradient_checkpointing", False) for m in model.modules())


@contextmanager
def training_mode(peft_model: nn.Module, checkpointing: bool = True) -> Iterator[nn.Module]:
    """Train mode, (non-reentrant) gradient checkpointing and trainable LoRA weights for the block;
    on exit, exceptions included, eval mode, checkpointing off and the grad flags as they were."""
    base = _base(peft_model)
    modes = [(m, m.training) for m in peft_model.modules()]
    grads = [(p, p.requires_grad) for p in peft_model.parameters()]
    hooks = _hook_ids(base)
    had_attrs = set(vars(base))
    was_checkpointing = _is_checkpointing(base)
    try:
        peft_model.train()
        if checkpointing and not was_checkpointing:
            with _quiet():
                _checkpointing(base, True)
        for name, p in peft_model.named_parameters():
            p.requires_grad_("lora_" in name)
        yield peft_model
    finally:
        if checkpointing and not was_checkpointing:
            with _quiet():
                _checkpointing(base, False)
        _remove_new_hooks(base, hooks)
        for attr in ("_require_grads_hook", "_require_grads_hooks"):
            if attr not in had_attrs and attr in vars(base):
                delattr(base, attr)
        for m, mode in modes:
            m.training = mode
        for p, flag in grads:
            p.requires_grad_(flag)


@contextmanager
def adapter_disabled_at(peft_model: nn.Module, layer: int) -> Iterator[None]:
    """The adapter switched off in decoder ``layer`` only: its LoRA modules run their base layer alone
    (peft's per-module ``disable_adapters`` flag, so the result is exactly the base projection)."""
    n = len(layers(peft_model))
    if not isinstance(layer, int) or not 0 <= layer < n:
        raise AtlasError(f"layer {layer!r} out of range: the model has layers 0..{n - 1}")
    mods = lora_modules(peft_model, layer)
    if not mods:
        raise AtlasError(f"layer {layer} carries no LoRA module: attach an adapter first")
    saved = [(m, m._disable_adapters) for m in mods]
    try:
        for m in mods:
            m._disable_adapters = True
        yield
    finally:
        for m, flag in saved:
            m._disable_adapters = flag


def adapter_norms(peft_model: nn.Module) -> list[float]:
    """Per decoder layer: sum over its LoRA modules and active adapters of ``||B @ A||_F * scaling``
    (the norm of the weight update the adapter adds), in fp32."""
    out = []
    with torch.no_grad():
        for layer in range(len(layers(peft_model))):
            total = 0.0
            for m in lora_modules(peft_model, layer):
                for name in m.active_adapters:
                    if name not in m.lora_A:
                        continue
                    a = m.lora_A[name].weight.float()
                    b = m.lora_B[name].weight.float()
                    total += float(torch.linalg.matrix_norm(b @ a)) * float(m.scaling[name])
            out.append(total)
    return out


def save_adapter(peft_model: nn.Module, adapter_dir: str | Path, meta: dict) -> Path:
    """Save the adapter (peft's format) plus ``atlas_meta.json`` (``meta`` and each file's SHA-256, checked by
    ``read_meta``) atomically: written to a temporary sibling folder, then renamed over ``adapter_dir``. Callers
    sharing a folder with other processes hold its adapter lock (``lora_training``)."""
    import shutil
    import tempfile

    target = Path(adapter_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    for debris in target.parent.glob(f".{target.name}.*"):  # of a save killed mid-way (callers hold the lock)
        shutil.rmtree(debris, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        with _quiet():
            peft_model.save_pretrained(str(tmp))
        files = {f.name: sha256_file(f) for f in sorted(tmp.iterdir()) if f.is_file()}
        (tmp / "atlas_meta.json").write_text(json.dumps({**meta, "files": files}, indent=2, sort_keys=True))
        _swap_in(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _swap_in(tmp: Path, target: Path) -> None:
    """Rename the finished folder ``tmp`` over ``target`` (a reader sees the old adapter or the new one)."""
    import os
    import shutil
    import tempfile

    if target.exists():
        old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old."))
        os.replace(target, old / "adapter")
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)


def adapter_files(adapter_dir: str | Path) -> dict[str, bytes]:
    """A saved adapter's files by name (checked by ``read_meta`` first): the adapter handed to a process that
    does not share the run folder (a Ray worker on another node, or back from one)."""
    folder = Path(adapter_dir)
    meta = read_meta(folder)
    if meta is None:
        raise AtlasError(f"no saved LoRA adapter in {folder}")
    return {name: (folder / name).read_bytes() for name in [*meta["files"], "atlas_meta.json"]}


def place_adapter(adapter_dir: str | Path, files: dict[str, bytes]) -> Path:
    """Write ``files`` (``adapter_files``' output) as the adapter in ``adapter_dir``, atomically, and check it;
    an adapter already there with the same ``atlas_meta.json`` (the same files, by their hashes) is kept as it is.
    Callers sharing the folder hold its adapter lock, as for ``save_adapter``."""
    import shutil
    import tempfile

    target = Path(adapter_dir)
    if (target / "atlas_meta.json").is_file() and (target / "atlas_meta.json").read_bytes() == files["atlas_meta.json"]:
        if read_meta(target) is not None:  # its files match the hashes (a damaged one raises)
            return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        for name, data in files.items():
            if name != Path(name).name or name.startswith("."):
                raise AtlasError(f"adapter file name {name!r} is not a plain file name")
            (tmp / name).write_bytes(data)
        if read_meta(tmp) is None:
            raise AtlasError(f"the adapter handed over for {target} lacks atlas_meta.json or its config")
        _swap_in(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def read_meta(adapter_dir: str | Path) -> dict | None:
    """The adapter's ``atlas_meta.json``; None when there is no saved adapter. A damaged one, or files that
    no longer match the hashes it recorded at save, are a ``CorruptFile`` naming the fix."""
    folder = Path(adapter_dir)
    path = folder / "atlas_meta.json"
    if not path.is_file() or not (folder / ADAPTER_CONFIG).is_file():
        return None
    fix = f"delete {folder} and run again: the experiments that need the adapter train it again"
    meta = read_json(path, fix)
    files = meta.get("files") if isinstance(meta, dict) else None
    if (
        not isinstance(files, dict)
        or not files
        or not all(
            isinstance(k, str) and k == Path(k).name and not k.startswith(".") and isinstance(v, str)
            for k, v in files.items()
        )
    ):
        raise CorruptFile(f"{path} records no valid file hashes; {fix}")
    for name, expected in sorted(files.items()):
        if not (folder / name).is_file() or sha256_file(folder / name) != expected:
            raise CorruptFile(
                f"the LoRA adapter in {folder} is damaged: {name} does not match the SHA-256 recorded "
                f"when it was saved; {fix}"
            )
    return meta
