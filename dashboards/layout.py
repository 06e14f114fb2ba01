"""Rows and the dashboard grid.

:func:`layout` turns a list of :class:`Row` into grid positions and stable
panel ids. Row *n* (1-based) has id ``n * 100`` and its panels
``n * 100 + 1``, ``n * 100 + 2``..., so adding a panel to one row never
renumbers another row (links to ``viewPanel=<id>`` stay valid).

A collapsed row is written as Grafana saves one: the row holds its panels
(``panels``, positioned as if it were open, just below it) and takes one
grid line, so the rows after it start right below its title bar. Grafana
runs no query of a collapsed row's panels until it is opened.
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
    collapsed: bool = False


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
        placed, height = _place(row.panels, row_id, y + 1)
        out.append(
            g.RowPanel(
                title=row.title,
                id=row_id,
                gridPos=g.GridPos(h=1, w=GRID_WIDTH, x=0, y=y),
                collapsed=row.collapsed,
                panels=placed if row.collapsed else [],
                maxDataPoints=None,
            )
        )
        y += 1
        if not row.collapsed:
            out.extend(placed)
            y += height
    return out


def _place(panels: list[Any], row_id: int, top: int) -> tuple[list[Any], int]:
    """A row's panels with ids and grid positions from line ``top`` down; and the height they take."""
    out = []
    x = y = line_height = 0
    for p, panel in enumerate(panels, start=1):
        w, h = panel.gridPos.w, panel.gridPos.h
        if x + w > GRID_WIDTH:
            y += line_height
            x = 0
            line_height = 0
        out.append(attr.evolve(panel, id=row_id + p, gridPos=g.GridPos(h=h, w=w, x=x, y=top + y)))
        x += w
        line_height = max(line_height, h)
    return out, y + line_height
