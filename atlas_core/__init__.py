"""Atlas: a causal-intervention atlas of transformer language models.

Data flows one way: model (``atlas_core.models``) -> runner (``atlas_core.runner``)
-> experiment results (``atlas_core.experiments``, ``atlas_core.results``) -> tests and reports.
"""

__version__ = "0.1.0"


class AtlasError(ValueError):
    """Bad input or an unusable environment; the message names the fix."""
