"""clary-gpu: the GPUs the exporter's NVML collector sees: heat, memory, ECC health, throttling, devices lost.

The memory-health alerts follow NVIDIA's guidance for data-center GPUs: an
uncorrectable ECC error has already hurt the job on that GPU (page); a page
retirement or row remap that waits for a reset is maintenance (ticket); a
failed row remap means the board needs service. Clock throttling alerts only
on thermal and hardware slowdowns: ``sw_power_cap`` is a loaded GPU at its
power limit, doing what it should.
"""

from __future__ import annotations

from typing import Any

from exporter.promql import agg, m, one_of, over_time

from ..config import Config, num, pct
from .common import RuleGroup

TEMPERATURE = m("clary_gpu_temperature_celsius")
MEMORY_USED = m("clary_gpu_memory_used_bytes")
MEMORY_TOTAL = m("clary_gpu_memory_total_bytes")
ECC_ERRORS = m("clary_gpu_ecc_errors_total")
REASON_ACTIVE = m("clary_gpu_clock_event_reason_active")
RETIRED_PENDING = m("clary_gpu_retired_pages_pending")
REMAP_PENDING = m("clary_gpu_row_remap_pending")
REMAP_FAILED = m("clary_gpu_row_remap_failed")
DEVICES = m("clary_gpu_devices")

PER_GPU = ("job", "instance", "gpu", "uuid")
# Clock event reasons that mean the GPU is slowed down against its will.
THROTTLING = {
    "Thermal": ("sw_thermal_slowdown", "hw_thermal_slowdown"),
    "Power": ("hw_slowdown", "hw_power_brake_slowdown"),
}
THROTTLE_WINDOW, THROTTLE_SHARE, THROTTLE_FOR = "15m", 0.5, "10m"
GPU = "GPU {{ $labels.gpu }} ({{ $labels.uuid }}) on {{ $labels.instance }}"


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
    _memory_health(g)
    _throttling(g)
    g.alert(
        "ClaryGpuDevicesMissing",
        f"{DEVICES.sel()} < {over_time('max', DEVICES.sel(), '1d')}",
        severity="warning",
        team="sre",
        for_="10m",
        summary="{{ $labels.instance }} lost GPUs.",
        description=(
            "{{ $labels.instance }} reports {{ $value | printf \"%.0f\" }} GPUs for 10 minutes, fewer than "
            "it did in the last day: a GPU fell off the bus or the driver is gone. Models placed on it fail."
        ),
    )
    return g.build()


def _memory_health(g: RuleGroup) -> None:
    g.alert(
        "ClaryGpuEccUncorrectedErrors",
        f"{ECC_ERRORS.sel(error='uncorrected', scope='volatile')} > 0",
        severity="critical",
        team="sre",
        for_="1m",
        summary="GPU {{ $labels.gpu }} on {{ $labels.instance }} had uncorrectable memory errors.",
        description=(
            f"{GPU} counted {{{{ $value | printf \"%.0f\" }}}} uncorrectable ECC errors since the driver "
            "loaded: the work on it may have crashed or returned corrupt results. The alert holds until "
            "the GPU is reset."
        ),
    )
    g.alert(
        "ClaryGpuMemoryRepairPending",
        f"({RETIRED_PENDING.sel()} == 1) or ({REMAP_PENDING.sel()} == 1)",
        severity="warning",
        team="sre",
        for_="15m",
        summary="GPU {{ $labels.gpu }} on {{ $labels.instance }} needs a reset to repair its memory.",
        description=(
            f"{GPU} has a page retirement or row remap pending: the faulty memory stays in use "
            "until the GPU is reset (drain it, then nvidia-smi -r or reboot)."
        ),
    )
    g.alert(
        "ClaryGpuRowRemapFailed",
        f"{REMAP_FAILED.sel()} == 1",
        severity="critical",
        team="sre",
        for_="5m",
        summary="GPU {{ $labels.gpu }} on {{ $labels.instance }} could not remap faulty memory.",
        description=(
            f"{GPU} failed a row remap: it has no spare rows left for its memory errors. "
            "Drain it and have the board serviced."
        ),
    )


def _throttling(g: RuleGroup) -> None:
    for kind, reasons in THROTTLING.items():
        share = agg(over_time("avg", REASON_ACTIVE.sel(reason=one_of(reasons)), THROTTLE_WINDOW), PER_GPU, op="max")
        g.alert(
            f"ClaryGpu{kind}Throttling",
            f"{share} > {num(THROTTLE_SHARE)}",
            severity="warning",
            team="sre",
            for_=THROTTLE_FOR,
            summary=f"GPU {{{{ $labels.gpu }}}} on {{{{ $labels.instance }}}} is slowed down ({kind.lower()}).",
            description=(
                f"{GPU} held its clocks down for {kind.lower()} reasons ({', '.join(reasons)}) "
                f"{{{{ $value | humanizePercentage }}}} of the last {THROTTLE_WINDOW} "
                f"(threshold {pct(THROTTLE_SHARE)}, for {THROTTLE_FOR}): inference on it runs slower."
            ),
        )
