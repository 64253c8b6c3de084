"""Where Atlas's shipped data lives: the task families, claims files, committed baselines and golden record.

The one module that knows these paths. They are found through ``importlib.resources``, so an installed
wheel reads its own copy; in a checkout (or an editable install) they are the checkout's own folders, so
``atlas golden write`` and ``atlas baseline`` write where git sees them. ``$ATLAS_TASKS_DIR`` replaces the
built-in task families' folder (see :func:`tasks_dir`).
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

TASKS_DIR_ENV = "ATLAS_TASKS_DIR"

# Package data is plain files inside the package (setuptools package-data), never a zip: a real folder.
DATA_DIR = Path(str(files(__name__)))
BUILTIN_TASKS_DIR = DATA_DIR / "tasks"
CLAIMS_DIR = DATA_DIR / "claims"
BASELINES_DIR = DATA_DIR / "baselines"
GOLDEN_DIR = DATA_DIR / "golden"


def tasks_dir() -> Path:
    """The built-in task families' folder, or the folder named by ``$ATLAS_TASKS_DIR``."""
    env = os.environ.get(TASKS_DIR_ENV)
    return Path(env).expanduser() if env else BUILTIN_TASKS_DIR


__all__ = ["BASELINES_DIR", "BUILTIN_TASKS_DIR", "CLAIMS_DIR", "DATA_DIR", "GOLDEN_DIR", "TASKS_DIR_ENV", "tasks_dir"]
