"""Atlas: a causal-intervention atlas of transformer language models.

Data flows one way, bottom up: storage primitives (``results``: the record format, atomic writes) -> model
loading (``models``) -> sites, hooks, interventions -> prompt encoding and the plain forward (``forward``) -> the
sweep runner (``runner``; ``distributed`` shards its sweeps over Ray) -> experiments -> verdicts, baselines, runs
-> claims -> report -> orchestrate -> the pytest plugin and the CLI. ``pyproject.toml``'s import-linter contract
checks it (``lint-imports``).
"""

__version__ = "0.1.0"


class AtlasError(ValueError):
    """Bad input or an unusable environment; the message names the fix."""
