"""How values are coloured: threshold steps and value mappings.

Kind modules pass these to the panel helpers as arguments, and the helpers
fall back to :data:`BASE`; none of them builds panel JSON.
"""

from __future__ import annotations

from typing import Any

# Thresholds presets (steps as Grafana writes them: first step has value null).
BASE = [{"color": "green", "value": None}]


def steps(*pairs: tuple[str, float]) -> list[dict[str, Any]]:
    """``steps(("orange", 0.8), ("red", 0.95))``: green below the first value."""
    return BASE + [{"color": color, "value": value} for color, value in pairs]


def steps_low_bad(*pairs: tuple[str, float]) -> list[dict[str, Any]]:
    """Red below the first value, then the given colors (e.g. days to expiry)."""
    return [{"color": "red", "value": None}] + [{"color": c, "value": v} for c, v in pairs]


def up_down_mappings() -> list[dict[str, Any]]:
    """Value mappings of the collector tiles: 0 DOWN, 1 UP, 2 (a GPU collector with no GPU to read) NO GPU."""
    return [
        {
            "options": {
                "0": {"color": "red", "index": 0, "text": "DOWN"},
                "1": {"color": "green", "index": 1, "text": "UP"},
                "2": {"color": "blue", "index": 2, "text": "NO GPU"},
            },
            "type": "value",
        }
    ]
