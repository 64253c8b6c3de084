"""What the section builders share: how many top rows a table lists, layer labels, the depth colour scale."""

from __future__ import annotations

from typing import Any, Sequence

from matplotlib import colormaps

from atlas_core.metrics import Estimate

TOP_K = 5
UNFIT_ROWS = 10  # LoRA pairs above the target loss listed (worst first)


def L(layer: Any) -> str:
    return f"L{layer}"


def depth_cmap(n: int) -> list[str]:
    cmap = colormaps["viridis"]
    return [hex_colour(cmap(0.9 * i / max(n - 1, 1))) for i in range(n)]


def hex_colour(rgba) -> str:
    return "#" + "".join(f"{int(round(c * 255)):02x}" for c in rgba[:3])


def interval(estimates: Sequence[Estimate], key: str = "y") -> dict[str, list[float]]:
    """The values of ``estimates`` under ``key`` (``"values"`` for bars) with their intervals' ``lo`` and ``hi``:
    a plotted series' error bars."""
    return {key: [e.value for e in estimates], "lo": [e.lo for e in estimates], "hi": [e.hi for e in estimates]}
