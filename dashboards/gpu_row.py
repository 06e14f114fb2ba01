"""The GPU row of the performance dashboards: what the NVML collector reads, per host and device.

GPU families carry no tier label (a GPU serves every tier), so every panel
shows the whole deployment and says so. Hosts without a GPU report
``clary_gpu_devices 0`` and no per-device series: the "GPUs per host" tile
says "no GPU" and the other panels stay empty for them. Per-device gauges
aggregate with ``max`` by host and device: one exporter reads one host's
GPUs, and a second scrape of the same device must not double it.
"""

from __future__ import annotations

from exporter.promql import agg, div, increase_range, m, rate

from . import thresholds
from .layout import Row
from .panels import gauge, stat, table, timeseries
from .styling import steps
from .targets import Q, instant, table_q

ALL_TIERS = "All tiers: this metric carries no tier label."
PER_GPU = ("instance", "gpu")
ON_GPU = "{{instance}} gpu{{gpu}}"

GPU_UTIL = m("clary_gpu_utilization_ratio")
GPU_MEM_USED = m("clary_gpu_memory_used_bytes")
GPU_MEM_TOTAL = m("clary_gpu_memory_total_bytes")
GPU_TEMP = m("clary_gpu_temperature_celsius")
GPU_POWER = m("clary_gpu_power_watts")
DEVICES = m("clary_gpu_devices")
INFO = m("clary_gpu_info")
SM_CLOCK = m("clary_gpu_sm_clock_hertz")
MEM_CLOCK = m("clary_gpu_memory_clock_hertz")
REASON = m("clary_gpu_clock_event_reason_active")
ENERGY = m("clary_gpu_energy_joules_total")
PCIE_TX = m("clary_gpu_pcie_transmitted_bytes_per_second")
PCIE_RX = m("clary_gpu_pcie_received_bytes_per_second")
PCIE_REPLAYS = m("clary_gpu_pcie_replays_total")
ENCODER = m("clary_gpu_encoder_utilization_ratio")
DECODER = m("clary_gpu_decoder_utilization_ratio")
MEM_TEMP = m("clary_gpu_memory_temperature_celsius")
MEM_COPY = m("clary_gpu_memory_copy_utilization_ratio")
ECC = m("clary_gpu_ecc_errors_total")
RETIRED = m("clary_gpu_retired_pages")
RETIRED_PENDING = m("clary_gpu_retired_pages_pending")
REMAPPED = m("clary_gpu_remapped_rows")
REMAP_PENDING = m("clary_gpu_row_remap_pending")
REMAP_FAILED = m("clary_gpu_row_remap_failed")
MIG_INFO = m("clary_gpu_mig_info")
MIG_USED = m("clary_gpu_mig_memory_used_bytes")
MIG_TOTAL = m("clary_gpu_mig_memory_total_bytes")

NO_GPU = [{"type": "value", "options": {"0": {"text": "no GPU", "color": "blue", "index": 0}}}]


def per_gpu(family, by=PER_GPU, **matchers) -> str:
    """``max by (instance, gpu, ...) (gauge)``: one value per device, never a sum of scrapes."""
    return agg(family.sel(**matchers), family.grouping(by), op="max")


def gpu_row() -> Row:
    return Row("GPU", [*_inventory(), *_load(), *_clocks_and_power(), *_io(), *_memory_health(), *_mig()])


def _inventory() -> list:
    return [
        stat(
            "GPUs per host",
            "GPUs NVML reports on each exporter host; \"no GPU\" where the host has no GPU, driver or "
            "pynvml (the GPU collector still reports up). A drop alerts as ClaryGpuDevicesMissing. " + ALL_TIERS,
            "short",
            Q(agg(DEVICES.sel(), ("instance",), op="max"), "{{instance}}"),
            mappings=NO_GPU,
            graph=False,
            text_mode="value_and_name",
            w=6,
            h=6,
        ),
        table(
            "GPU inventory",
            "Model and driver of every GPU (clary_gpu_info), to tell devices apart in the panels below. "
            + ALL_TIERS,
            "short",
            table_q(per_gpu(INFO, ("instance", "gpu", "uuid", "model_name", "driver_version"))),
            hide=("Value",),
            sort_by="instance",
            w=18,
            h=6,
        ),
    ]


def _load() -> list:
    return [
        timeseries(
            "GPU utilization",
            "GPU busy ratio per host and device. Empty on hosts without a GPU. " + ALL_TIERS,
            "percentunit",
            Q(per_gpu(GPU_UTIL), ON_GPU),
            min_=0,
            max_=1,
            w=6,
        ),
        timeseries(
            "GPU memory used",
            "GPU framebuffer memory in use and installed, per host and device. " + ALL_TIERS,
            "bytes",
            Q(per_gpu(GPU_MEM_USED), f"{ON_GPU} used"),
            Q(per_gpu(GPU_MEM_TOTAL), f"{ON_GPU} total"),
            w=6,
        ),
        timeseries(
            "GPU temperature",
            "GPU core temperature per host and device. " + ALL_TIERS,
            "celsius",
            Q(per_gpu(GPU_TEMP), ON_GPU),
            thresholds=thresholds.gpu_temperature(),
            w=4,
        ),
        timeseries(
            "GPU power",
            "GPU power draw per host and device, as sampled at the scrape. " + ALL_TIERS,
            "watt",
            Q(per_gpu(GPU_POWER), ON_GPU),
            w=4,
        ),
        gauge(
            "GPU memory in use",
            "Highest GPU memory used / installed ratio across devices. " + ALL_TIERS,
            "percentunit",
            Q(agg(div(per_gpu(GPU_MEM_USED), per_gpu(GPU_MEM_TOTAL)), op="max")),
            thresholds=thresholds.gpu_memory(),
            w=4,
            h=8,
        ),
    ]


def _clocks_and_power() -> list:
    return [
        timeseries(
            "SM and memory clocks",
            "Current streaming-multiprocessor and memory clocks per device. A drop under load with a clock "
            "event reason below is throttling. " + ALL_TIERS,
            "hertz",
            Q(per_gpu(SM_CLOCK), f"{ON_GPU} SM"),
            Q(per_gpu(MEM_CLOCK), f"{ON_GPU} memory"),
            w=8,
        ),
        timeseries(
            "Clock event reasons",
            "Devices whose clocks a reason holds down or explains, per reason (0: none). Thermal "
            "(sw/hw_thermal_slowdown) and hardware/power-brake slowdowns alert when sustained; sw_power_cap "
            "is a busy GPU at its power limit and gpu_idle an idle one, both normal. " + ALL_TIERS,
            "short",
            Q(agg(REASON.sel(), ("reason",)), "{{reason}}"),
            min_=0,
            w=8,
        ),
        timeseries(
            "Average power (from energy)",
            "Energy counter rate per device: the true average power over each step, where the power "
            "panel shows one sample per scrape. " + ALL_TIERS,
            "watt",
            Q(agg(rate(ENERGY.sel()), PER_GPU, op="max"), ON_GPU),
            min_=0,
            w=8,
        ),
    ]


def _io() -> list:
    return [
        timeseries(
            "PCIe throughput",
            "PCIe bytes per second sent by (tx) and to (rx) each device, as the driver samples them. "
            + ALL_TIERS,
            "Bps",
            Q(per_gpu(PCIE_TX), f"{ON_GPU} tx"),
            Q(per_gpu(PCIE_RX), f"{ON_GPU} rx"),
            w=8,
        ),
        timeseries(
            "PCIe replays",
            "PCIe link-level retries per second, per device: a steady rate points to a bad riser, slot "
            "or link. " + ALL_TIERS,
            "ops",
            Q(agg(rate(PCIE_REPLAYS.sel()), PER_GPU, op="max"), ON_GPU),
            min_=0,
            w=4,
        ),
        timeseries(
            "Encoder, decoder and memory copy use",
            "Video encoder and decoder busy ratios, and the share of time device memory was read or "
            "written, per device. " + ALL_TIERS,
            "percentunit",
            Q(per_gpu(ENCODER), f"{ON_GPU} encoder"),
            Q(per_gpu(DECODER), f"{ON_GPU} decoder"),
            Q(per_gpu(MEM_COPY), f"{ON_GPU} memory copy"),
            min_=0,
            max_=1,
            w=6,
        ),
        timeseries(
            "GPU memory temperature",
            "HBM temperature per device (data-center GPUs; empty where the board has no sensor). " + ALL_TIERS,
            "celsius",
            Q(per_gpu(MEM_TEMP), ON_GPU),
            w=6,
        ),
    ]


def _memory_health() -> list:
    uncorrected = ECC.sel(error="uncorrected", scope="volatile")
    return [
        stat(
            "Uncorrectable ECC errors",
            "Uncorrectable ECC errors in the time range, all devices. Any is ClaryGpuEccUncorrectedErrors "
            "(critical): the work on that GPU may be corrupt. " + ALL_TIERS,
            "short",
            instant(agg(increase_range(uncorrected))),
            thresholds=steps(("red", 1)),
            graph=False,
            w=4,
            h=6,
        ),
        stat(
            "GPUs waiting for a reset",
            "Devices with a page retirement or row remap pending: their faulty memory stays in use until "
            "the GPU is reset (ClaryGpuMemoryRepairPending). " + ALL_TIERS,
            "short",
            Q(agg(agg(f"{RETIRED_PENDING.sel()} or {REMAP_PENDING.sel()}", PER_GPU, op="max"))),
            thresholds=steps(("orange", 1)),
            graph=False,
            w=4,
            h=6,
        ),
        stat(
            "Failed row remaps",
            "Devices whose memory could not be repaired: drain and service them (ClaryGpuRowRemapFailed). "
            + ALL_TIERS,
            "short",
            Q(agg(per_gpu(REMAP_FAILED))),
            thresholds=steps(("red", 1)),
            graph=False,
            w=4,
            h=6,
        ),
        stat(
            "GPU energy used",
            "Energy all GPUs consumed in the time range (the energy counters' increase). " + ALL_TIERS,
            "joule",
            instant(agg(increase_range(ENERGY.sel()))),
            graph=False,
            w=4,
            h=6,
        ),
        timeseries(
            "ECC error rate",
            "Corrected and uncorrected ECC errors per second, per device (volatile counters, reset with "
            "the driver). Corrected errors are repaired; a rising rate foretells retired pages or remapped "
            "rows. " + ALL_TIERS,
            "ops",
            Q(agg(rate(ECC.sel(scope="volatile")), ("instance", "gpu", "error"), op="max"),
              f"{ON_GPU} {{{{error}}}}"),
            min_=0,
            w=8,
            h=6,
        ),
    ]


def _mig() -> list:
    mig = ("instance", "gpu", "gpu_instance_id", "compute_instance_id")
    return [
        timeseries(
            "Retired pages and remapped rows",
            "Memory pages retired (up to Volta) and rows remapped (Ampere and later) per device, after "
            "corrected or uncorrected errors. They only grow; NVIDIA's service limits apply. " + ALL_TIERS,
            "short",
            Q(per_gpu(RETIRED, PER_GPU + ("error",)), f"{ON_GPU} retired {{{{error}}}}"),
            Q(per_gpu(REMAPPED, PER_GPU + ("error",)), f"{ON_GPU} remapped {{{{error}}}}"),
            min_=0,
            w=8,
        ),
        table(
            "MIG devices",
            "MIG devices of GPUs in MIG mode: GPU and compute instance, profile and the UUID workloads "
            "name. Empty without MIG. " + ALL_TIERS,
            "short",
            table_q(agg(MIG_INFO.sel(), mig + ("mig_profile", "mig_uuid"), op="max")),
            hide=("Value",),
            sort_by="instance",
            w=8,
        ),
        timeseries(
            "MIG memory used",
            "Memory in use on each MIG device, against its size. Empty without MIG. " + ALL_TIERS,
            "bytes",
            Q(agg(MIG_USED.sel(), mig, op="max"), "{{instance}} gpu{{gpu}} gi{{gpu_instance_id}} used"),
            Q(agg(MIG_TOTAL.sel(), mig, op="max"), "{{instance}} gpu{{gpu}} gi{{gpu_instance_id}} size"),
            w=8,
        ),
    ]
