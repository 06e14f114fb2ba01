"""Shared panel helpers: every panel in every dashboard is made here.

Kind modules (usage, performance, license, feedback, overview) describe
*what* to show with the functions below; none of them builds panel JSON by
hand. Each helper takes the title, a description (required: Grafana shows it
as the panel's info tooltip), a unit and one or more :class:`~.targets.Q`
queries. Queries and targets (``targets``), threshold steps and value
mappings (``styling``) and rows and the grid (``layout``) have their own
modules; this one is only the panel constructors.

Only current React panel types are produced: timeseries, stat, gauge,
bargauge, table, heatmap, histogram, piechart and text (plus rows for the
layout). grafanalib 0.7.1 still writes the Grafana 6 JSON shape for gauge,
bar gauge and heatmap (``fieldOptions``, Angular heatmap ``cards``), which a
Grafana 10+ dashboard with a current ``schemaVersion`` would ignore or
re-migrate, so those three are :class:`ReactPanel` instances built on
grafanalib's ``Panel`` base.
"""

from __future__ import annotations

import string
from typing import Any

import attr
from grafanalib import core as g

from .layout import GRID_WIDTH
from .styling import BASE
from .targets import DS, Q, prom_targets


def _size(w: int, h: int) -> g.GridPos:
    if not 1 <= w <= GRID_WIDTH:
        raise ValueError(f"panel width {w} outside 1..{GRID_WIDTH}")
    return g.GridPos(h=h, w=w, x=0, y=0)


def _common(title: str, description: str, w: int, h: int) -> dict[str, Any]:
    if not description.strip():
        raise ValueError(f"panel {title!r} needs a description")
    return {"title": title, "description": description, "gridPos": _size(w, h)}


# --- React panels grafanalib 0.7.1 writes in a legacy shape ---------------

@attr.s
class ReactPanel(g.Panel):
    """A panel given as its type, options and field defaults."""

    panelType = attr.ib(default="", validator=attr.validators.instance_of(str))
    options = attr.ib(factory=dict, validator=attr.validators.instance_of(dict))
    defaults = attr.ib(factory=dict, validator=attr.validators.instance_of(dict))
    overrides = attr.ib(factory=list, validator=attr.validators.instance_of(list))

    def to_json_data(self):
        return self.panel_json(
            {
                "type": self.panelType,
                "options": self.options,
                "fieldConfig": {"defaults": self.defaults, "overrides": self.overrides},
            }
        )


HEATMAP_NOTE = (
    "A cell is the observations in that bucket during the cell's time step: the bucket's per-second rate "
    "over $__rate_interval times the step. Not increase() over $__rate_interval, which is longer than a "
    "step: its windows overlap and would count each observation in several cells."
)


def _reduce(calc: str) -> dict[str, Any]:
    return {"calcs": [calc], "fields": "", "values": False}


# --- the helpers ----------------------------------------------------------

def timeseries(
    title: str,
    description: str,
    unit: str,
    *queries: Q,
    w: int = 12,
    h: int = 8,
    stack: bool = False,
    bars: bool = False,
    min_: int | None = None,
    max_: int | None = None,
    axis_label: str = "",
    thresholds: list[dict[str, Any]] | None = None,
) -> g.TimeSeries:
    return g.TimeSeries(
        **_common(title, description, w, h),
        dataSource=DS,
        targets=prom_targets(queries),
        unit=unit,
        drawStyle="bars" if bars else "line",
        fillOpacity=60 if bars else (25 if stack else 10),
        stacking={"mode": "normal", "group": "A"} if stack else {"mode": "none", "group": "A"},
        valueMin=min_,
        valueMax=max_,
        axisLabel=axis_label,
        legendDisplayMode="list",
        legendCalcs=[],
        tooltipMode="multi",
        tooltipSort="desc",
        showPoints="never",
        thresholds=thresholds or BASE,
        thresholdsStyleMode="line" if thresholds else "off",
        maxDataPoints=None,
    )


def stat(
    title: str,
    description: str,
    unit: str,
    *queries: Q,
    w: int = 6,
    h: int = 4,
    thresholds: list[dict[str, Any]] | None = None,
    decimals: int | None = None,
    calc: str = "lastNotNull",
    mappings: list[dict[str, Any]] | None = None,
    graph: bool = True,
    text_mode: str = "auto",
) -> g.Stat:
    return g.Stat(
        **_common(title, description, w, h),
        dataSource=DS,
        targets=prom_targets(queries),
        format=unit,
        color={"mode": "thresholds"},
        thresholds=thresholds or BASE,
        decimals=decimals,
        reduceCalc=calc,
        mappings=mappings or [],
        graphMode="area" if graph else "none",
        colorMode="value",
        textMode=text_mode,
        noValue="no data",
        maxDataPoints=None,
    )


def gauge(
    title: str,
    description: str,
    unit: str,
    *queries: Q,
    w: int = 6,
    h: int = 6,
    min_: float = 0,
    max_: float = 1,
    thresholds: list[dict[str, Any]] | None = None,
    decimals: int | None = None,
) -> ReactPanel:
    return ReactPanel(
        **_common(title, description, w, h),
        panelType="gauge",
        dataSource=DS,
        targets=prom_targets(queries),
        maxDataPoints=None,
        options={
            "orientation": "auto",
            "reduceOptions": _reduce("lastNotNull"),
            "showThresholdLabels": False,
            "showThresholdMarkers": True,
        },
        defaults={
            "color": {"mode": "thresholds"},
            "decimals": decimals,
            "mappings": [],
            "max": max_,
            "min": min_,
            "thresholds": {"mode": "absolute", "steps": thresholds or BASE},
            "unit": unit,
        },
    )


def bargauge(
    title: str,
    description: str,
    unit: str,
    *queries: Q,
    w: int = 8,
    h: int = 8,
    min_: float | None = 0,
    max_: float | None = None,
    thresholds: list[dict[str, Any]] | None = None,
    decimals: int | None = None,
    orientation: str = "horizontal",
) -> ReactPanel:
    return ReactPanel(
        **_common(title, description, w, h),
        panelType="bargauge",
        dataSource=DS,
        targets=prom_targets(queries),
        maxDataPoints=None,
        options={
            "displayMode": "gradient",
            "minVizHeight": 10,
            "minVizWidth": 0,
            "orientation": orientation,
            "reduceOptions": _reduce("lastNotNull"),
            "showUnfilled": True,
            "valueMode": "color",
        },
        defaults={
            "color": {"mode": "thresholds"},
            "decimals": decimals,
            "mappings": [],
            "max": max_,
            "min": min_,
            "thresholds": {"mode": "absolute", "steps": thresholds or BASE},
            "unit": unit,
        },
    )


def heatmap(
    title: str,
    description: str,
    unit: str,
    expr: str,
    *,
    w: int = 12,
    h: int = 8,
) -> ReactPanel:
    """A heatmap of pre-bucketed Prometheus histogram data (:func:`exporter.promql.hist_buckets`).

    Every heatmap's description ends with :data:`HEATMAP_NOTE`, what a cell counts.
    """
    return ReactPanel(
        **_common(title, f"{description} {HEATMAP_NOTE}", w, h),
        panelType="heatmap",
        dataSource=DS,
        targets=prom_targets((Q(expr, "{{le}}", fmt="heatmap"),)),
        maxDataPoints=None,
        options={
            "calculate": False,
            "cellGap": 1,
            "color": {
                "exponent": 0.5,
                "fill": "dark-orange",
                "mode": "scheme",
                "reverse": False,
                "scale": "exponential",
                "scheme": "Oranges",
                "steps": 64,
            },
            "exemplars": {"color": "rgba(255,0,255,0.7)"},
            "filterValues": {"le": 1e-9},
            "legend": {"show": True},
            "rowsFrame": {"layout": "auto"},
            "tooltip": {"mode": "single", "showColorScale": False, "yHistogram": False},
            "yAxis": {"axisPlacement": "left", "reverse": False, "unit": unit},
        },
        defaults={
            "custom": {
                "hideFrom": {"legend": False, "tooltip": False, "viz": False},
                "scaleDistribution": {"type": "linear"},
            },
            "unit": unit,
        },
    )


def histogram(
    title: str,
    description: str,
    unit: str,
    *queries: Q,
    w: int = 8,
    h: int = 8,
) -> g.Histogram:
    """Grafana's histogram panel: the distribution of the returned *values*."""
    return g.Histogram(
        **_common(title, description, w, h),
        dataSource=DS,
        targets=prom_targets(queries),
        colorMode="palette-classic",
        combine=True,
        maxDataPoints=None,
        extraJson={"fieldConfig": {"defaults": {"unit": unit}}},
    )


def piechart(
    title: str,
    description: str,
    unit: str,
    *queries: Q,
    w: int = 8,
    h: int = 8,
) -> g.PieChartv2:
    return g.PieChartv2(
        **_common(title, description, w, h),
        dataSource=DS,
        targets=prom_targets(queries),
        unit=unit,
        pieType="donut",
        legendDisplayMode="table",
        legendPlacement="right",
        legendValues=["value", "percent"],
        reduceOptionsCalcs=["lastNotNull"],
        maxDataPoints=None,
    )


def table(
    title: str,
    description: str,
    unit: str,
    *queries: Q,
    w: int = 12,
    h: int = 8,
    value_column: str = "Value",
    columns: tuple[str, ...] = (),
    hide: tuple[str, ...] = (),
    sort_by: str | None = None,
    descending: bool = False,
    thresholds: list[dict[str, Any]] | None = None,
) -> g.Table:
    """A table of instant ``format: table`` queries, Time column hidden.

    One query: its value column is called ``value_column``. Several queries:
    the frames are merged on their labels and ``columns`` names each query's
    value column, in order.
    """
    if any(q.fmt != "table" for q in queries):
        raise ValueError(f"table {title!r}: use table_q() queries")
    excluded = {"Time": True, **{name: True for name in hide}}
    transformations: list[dict[str, Any]] = []
    if len(queries) == 1:
        renames = {"Value": value_column}
    else:
        if len(columns) != len(queries):
            raise ValueError(f"table {title!r}: name one column per query")
        renames = {f"Value #{string.ascii_uppercase[i]}": name for i, name in enumerate(columns)}
        transformations.append({"id": "merge", "options": {}})
    return g.Table(
        **_common(title, description, w, h),
        dataSource=DS,
        targets=prom_targets(queries),
        unit=unit,
        thresholds=thresholds or BASE,
        displayMode="color-text",
        filterable=True,
        sortBy=[g.TableSortByField(displayName=sort_by, desc=descending)] if sort_by else [],
        transformations=transformations + [
            {
                "id": "organize",
                "options": {"excludeByName": excluded, "renameByName": renames},
            }
        ],
        maxDataPoints=None,
    )


def text(title: str, description: str, content: str, *, w: int = 24, h: int = 4) -> g.Text:
    """A markdown panel. It has no query, hence no unit."""
    return g.Text(**_common(title, description, w, h), content=content, mode="markdown")
