"""clary-gpu: temperature and memory of the GPUs the exporter's NVML collector sees."""

from __future__ import annotations

from typing import Any

from exporter.promql import m

from ..config import Config, num, pct
from .common import RuleGroup

TEMPERATURE = m("clary_gpu_temperature_celsius")
MEMORY_USED = m("clary_gpu_memory_used_bytes")
MEMORY_TOTAL = m("clary_gpu_memory_total_bytes")


def gpu_group(cfg: Config) -> dict[str, Any]:
    g = RuleGroup("clary-gpu", cfg)
    for severity, celsius, for_ in (
        ("warning", cfg.gpu_temperature_warning_celsius, "10m"),
        ("critical", cfg.gpu_temperature_critical_celsius, "5m"),
    ):
        g.alert(
            "ClaryGpuTemperatureHigh",
            f"{TEMPERATURE.sel()} > {num(celsius)}",
            severity=severity,
            team="sre",
            for_=for_,
            summary="GPU {{ $labels.gpu }} on {{ $labels.instance }} runs hot.",
            description=(
                "GPU {{ $labels.gpu }} ({{ $labels.uuid }}) on {{ $labels.instance }} is at "
                f"{{{{ $value | printf \"%.0f\" }}}}°C (threshold {num(celsius)}°C)."
            ),
        )
    g.alert(
        "ClaryGpuMemorySaturated",
        f"""
        {MEMORY_USED.sel()}
        /
        ({MEMORY_TOTAL.sel()} > 0)
        > {num(cfg.gpu_memory_ratio)}
        """,
        severity="warning",
        team="sre",
        for_="15m",
        summary="GPU {{ $labels.gpu }} on {{ $labels.instance }} is almost out of memory.",
        description=(
            "GPU {{ $labels.gpu }} ({{ $labels.uuid }}) on {{ $labels.instance }} uses {{ $value | humanizePercentage }} "
            f"of its memory (threshold {pct(cfg.gpu_memory_ratio)}): model loads will fail."
        ),
    )
    return g.build()
