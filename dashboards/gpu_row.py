"""The GPU row of the performance dashboards: what the NVML collector reads, per host and device.

GPU families carry no tier label (a GPU serves every tier), so every panel
shows the whole deployment and says so. Hosts without a GPU have no
per-device series; their panels stay empty.
"""

from __future__ import annotations

from exporter.promql import agg, div, m, sum_gauge

from .layout import Row
from .panels import gauge, timeseries
from .styling import steps
from .targets import Q

ALL_TIERS = "All tiers: this metric carries no tier label."
PER_GPU = ("instance", "gpu")

GPU_UTIL = m("clary_gpu_utilization_ratio")
GPU_MEM_USED = m("clary_gpu_memory_used_bytes")
GPU_MEM_TOTAL = m("clary_gpu_memory_total_bytes")
GPU_TEMP = m("clary_gpu_temperature_celsius")
GPU_POWER = m("clary_gpu_power_watts")


def gpu_row() -> Row:
    return Row(
        "GPU",
        [
            timeseries(
                "GPU utilization",
                "GPU busy ratio per host and device. Empty on hosts without a GPU. " + ALL_TIERS,
                "percentunit",
                Q(sum_gauge(GPU_UTIL, PER_GPU), "{{instance}} gpu{{gpu}}"),
                min_=0,
                max_=1,
                w=6,
            ),
            timeseries(
                "GPU memory used",
                "GPU framebuffer memory in use and installed, per host and device. " + ALL_TIERS,
                "bytes",
                Q(sum_gauge(GPU_MEM_USED, PER_GPU), "{{instance}} gpu{{gpu}} used"),
                Q(sum_gauge(GPU_MEM_TOTAL, PER_GPU), "{{instance}} gpu{{gpu}} total"),
                w=6,
            ),
            timeseries(
                "GPU temperature",
                "GPU core temperature per host and device. " + ALL_TIERS,
                "celsius",
                Q(sum_gauge(GPU_TEMP, PER_GPU), "{{instance}} gpu{{gpu}}"),
                thresholds=steps(("orange", 80), ("red", 90)),
                w=4,
            ),
            timeseries(
                "GPU power",
                "GPU power draw per host and device. " + ALL_TIERS,
                "watt",
                Q(sum_gauge(GPU_POWER, PER_GPU), "{{instance}} gpu{{gpu}}"),
                w=4,
            ),
            gauge(
                "GPU memory in use",
                "Highest GPU memory used / installed ratio across devices. " + ALL_TIERS,
                "percentunit",
                Q(agg(div(sum_gauge(GPU_MEM_USED, PER_GPU), sum_gauge(GPU_MEM_TOTAL, PER_GPU)), op="max")),
                thresholds=steps(("orange", 0.8), ("red", 0.95)),
                w=4,
                h=8,
            ),
        ],
    )
