"""Rows and the dashboard grid.

:func:`layout` turns a list of :class:`Row` into grid positions and stable
panel ids. Row *n* (1-based) has id ``n * 100`` and its panels
``n * 100 + 1``, ``n * 100 + 2``..., so adding a panel to one row never
renumbers another row (links to ``viewPanel=<id>`` stay valid).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import attr
from grafanalib import core as g

GRID_WIDTH = 24
ROW_ID_STRIDE = 100


@dataclass
class Row:
    """A titled group of panels; laid out left to right, wrapping at 24 columns."""

    title: str
    panels: list[Any] = field(default_factory=list)


def layout(rows: list[Row]) -> list[Any]:
    """Grid positions and stable ids for a dashboard's rows and panels."""
    out: list[Any] = []
    y = 0
    for r, row in enumerate(rows, start=1):
        if not row.panels:
            raise ValueError(f"row {row.title!r} is empty")
        if len(row.panels) >= ROW_ID_STRIDE:
            raise ValueError(f"row {row.title!r} has too many panels")
        row_id = r * ROW_ID_STRIDE
        out.append(
            g.RowPanel(
                title=row.title,
                id=row_id,
                gridPos=g.GridPos(h=1, w=GRID_WIDTH, x=0, y=y),
                collapsed=False,
                panels=[],
                maxDataPoints=None,
            )
        )
        y += 1
        x = 0
        line_height = 0
        for p, panel in enumerate(row.panels, start=1):
            w, h = panel.gridPos.w, panel.gridPos.h
            if x + w > GRID_WIDTH:
                y += line_height
                x = 0
                line_height = 0
            out.append(attr.evolve(panel, id=row_id + p, gridPos=g.GridPos(h=h, w=w, x=x, y=y)))
            x += w
            line_height = max(line_height, h)
        y += line_height
    return out
