"""Models: the registry of offline models, fetch + verify + cache, ``load``, architecture adapters."""

from atlas_core.models.adapters import ArchAdapter, adapter_for, check_supported, layer_window
from atlas_core.models.offline import cache_dir, cache_root, fetch, is_cached
from atlas_core.models.loader import LoadedModel, ModelInfo, load, resolve_device, resolve_dtype
from atlas_core.models.registry import DEFAULT_MODEL, OFFLINE_MODELS, TINY_MODEL, known_names

__all__ = [
    "ArchAdapter",
    "adapter_for",
    "check_supported",
    "layer_window",
    "cache_dir",
    "cache_root",
    "fetch",
    "is_cached",
    "LoadedModel",
    "ModelInfo",
    "load",
    "resolve_device",
    "resolve_dtype",
    "DEFAULT_MODEL",
    "OFFLINE_MODELS",
    "TINY_MODEL",
    "known_names",
]
