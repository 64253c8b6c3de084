"""The checks ``atlas run`` (:mod:`atlas_core.orchestrate`) makes before any work, each failing with a one-line
error that names the fix: the model name is known, the selected experiments' task families are loaded, the output
folder is writable, no other process holds an experiment's lock. Apart from the run itself, which calls them in
order, and the pytest plugin, which checks its options with them."""

from __future__ import annotations

import os
from pathlib import Path

from filelock import Timeout

from atlas_core import AtlasError
from atlas_core.experiments import lora_training
from atlas_core.models import known_names
from atlas_core.models.registry import OFFLINE_MODELS, PLANTED_MODELS, TINY_MODELS
from atlas_core.spec import experiment as spec_of
from atlas_core.results import RecordStore


def check_needed_families(names: list[str], families: dict, drive: dict | None = None) -> None:
    """Each selected experiment's task families (the one the run has it drive, else its
    ``ExperimentSpec.families``) are loaded, with the item and contrast prompts a skill direction needs: found
    before the model loads, not after other experiments ran."""
    for name in names:
        for family in (drive[name],) if drive and name in drive else spec_of(name).families:
            if family not in families:
                raise AtlasError(
                    f"experiment {name} needs task family {family!r}, which this run does not load "
                    f"(loaded: {', '.join(families)}); add it to --families or leave {name} out of "
                    "--experiments"
                )
            fam = families[family]
            if not fam.items or not fam.contrast:
                raise AtlasError(
                    f"experiment {name} needs task family {family!r} with item and contrast prompts; "
                    f"it has {len(fam.items)} items and {len(fam.contrast)} contrast prompts"
                )


def check_model_name(name: str) -> None:
    """Fail before any work on a name that is neither registered nor a path nor a hub id."""
    p = Path(name).expanduser()
    if (
        name in OFFLINE_MODELS
        or name in TINY_MODELS
        or name in PLANTED_MODELS
        or p.exists()
        or ("/" in name and not name.startswith((".", "/", "~")))
    ):
        return
    raise AtlasError(
        f"unknown model {name!r}; known models: {', '.join(known_names())} "
        "(or pass a local Hugging Face directory, a hub id, or a .gguf path)"
    )


def check_writable_dir(path: Path, what: str) -> None:
    """``path`` is (or can be made) a folder this process can write in."""
    if path.exists() and not path.is_dir():
        raise AtlasError(f"{what} {path} is a file, not a folder; pass a folder path")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise AtlasError(f"{what} {path}: cannot write in {existing} (read-only or not ours); pass a writable folder")


def locked_message(store: RecordStore, name: str, lock) -> str:
    """The error when another process holds ``name``'s lock."""
    return (
        f"{name} is being computed by another atlas run in {store.root} (it holds {lock.lock_file}); wait for "
        f"it to finish, or leave {name} out of --experiments"
    )


def check_free(store: RecordStore, name: str, seeds: list[int]) -> None:
    """Fail, naming the lock, when another process holds ``name``'s lock or trains one of the adapters it would
    train. An adapter lock file that does not exist is held by no one: none is created to find that out."""
    locks = [(store.lock(name), lambda lock: locked_message(store, name, lock))]
    if name == lora_training.NAME:
        for seed in seeds:
            path = store.root / ".locks" / f"{lora_training.adapter_lock_name(seed)}.lock"
            if path.exists():
                locks.append(
                    (
                        store.lock(lora_training.adapter_lock_name(seed)),
                        lambda lock, seed=seed: lora_training.adapter_busy(store.root, seed, lock.lock_file),
                    )
                )
    for lock, busy in locks:
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise AtlasError(busy(lock)) from None
        lock.release()
