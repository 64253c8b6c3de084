"""Models larger than one device: ``--device-map auto`` places a loaded model's layers across devices with
accelerate (``infer_auto_device_map`` + ``dispatch_model``), offloading what does not fit to CPU memory or to
disk. Decoder layers are never split (the model's ``_no_split_modules``), so every site hook sees a whole
layer's tensors; accelerate moves inputs and weights to each layer's device inside its forward."""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass

from atlas_core import AtlasError

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Placement:
    """Where each module went (accelerate's device map) and the folder holding disk-offloaded weights."""

    device_map: dict[str, str | int]
    offload_dir: str | None

    @property
    def devices(self) -> list[str]:
        return sorted({str(d) for d in self.device_map.values()})


def parse_max_memory(text: str | None) -> dict[str | int, str | int] | None:
    """``"0=20GiB,cpu=60GiB"`` -> ``{0: "20GiB", "cpu": "60GiB"}`` (accelerate's ``max_memory``); a size in bytes
    (``cpu=362880`` or ``362880B``) becomes an int, the form accelerate takes bytes in."""
    if not text:
        return None
    out: dict[str | int, str | int] = {}
    for part in text.split(","):
        dev, sep, size = part.partition("=")
        dev, size = dev.strip(), size.strip()
        sized = _SIZE.match(size)
        if not sep or not dev or sized is None:
            raise AtlasError(f"--max-memory entry {part!r} is not DEVICE=SIZE (e.g. 0=20GiB,cpu=60GiB)")
        key: str | int = int(dev.removeprefix("cuda:")) if dev.removeprefix("cuda:").isdigit() else dev
        if key not in ("cpu", "disk") and not isinstance(key, int):
            raise AtlasError(f"--max-memory device {dev!r}: use a GPU index (0, cuda:1), cpu or disk")
        number, unit = sized.groups()
        out[key] = int(float(number)) if unit in (None, "B", "b") else size
    return out


def place(
    model, device_map: str | dict = "auto", max_memory: dict | None = None, offload_dir: str | None = None
) -> Placement:
    """Dispatch ``model`` (loaded on the CPU) across devices in place. ``device_map``: ``"auto"`` (fill the
    GPUs, then the CPU, then disk, within ``max_memory``) or an explicit accelerate map."""
    try:
        from accelerate import dispatch_model, infer_auto_device_map
    except ImportError:
        raise AtlasError('--device-map needs accelerate: pip install -e ".[multidevice]"') from None
    if device_map == "auto":
        no_split = list(getattr(model, "_no_split_modules", None) or [])
        device_map = infer_auto_device_map(model, max_memory=max_memory, no_split_module_classes=no_split)
    elif not isinstance(device_map, dict):
        raise AtlasError(f"--device-map {device_map!r}: only 'auto' (or an explicit map from Python)")
    if "disk" in device_map.values() and offload_dir is None:
        offload_dir = tempfile.mkdtemp(prefix="atlas-offload-")
    main = next((d for d in device_map.values() if d not in ("cpu", "disk")), "cpu")
    dispatch_model(model, device_map=device_map, main_device=main, offload_dir=offload_dir)
    return Placement(dict(device_map), offload_dir)
