"""Check the GPU collector against a real NVIDIA GPU: one collection, every value next to its NVML source.

The fake NVML of the test suite proves the collector follows NVML's
contract; only a real device proves the contract was read right (units,
which calls a board supports). This script, run on a GPU machine:

1. reads every NVML value the collector uses, straight from NVML and with
   its own unit conversions (an oracle independent of the collector's);
2. runs the real GpuCollector once, through a CollectorSet and the text
   exposition, as a scrape would;
3. reads NVML again, and checks each collected sample against the two raw
   readings around it: equal for identities, counts and flags, between the
   two readings for counters, within a band for gauges that move (load,
   clocks, power), wide enough for a busy GPU and narrow enough to catch a
   unit mistake (MHz for Hz, mW for W, KB for bytes, percent for ratio);
   a sample NVML can read but the collector lacks, or one it has although
   NVML says NOT_SUPPORTED, is a mismatch too;
4. prints ``nvidia-smi --query-gpu=... --format=csv`` where nvidia-smi
   exists and compares its identity and a few readings with the samples.

Usage: .venv/bin/python -m benchmarks.gpu_check [--require-gpu] [--nvidia-smi PATH]
Exit: 0 every value matches (or no GPU here, without --require-gpu);
1 a mismatch or the collector failed; 2 no GPU and --require-gpu.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter.collectors.base import CollectorSet
from exporter.collectors.gpu import GpuCollector

MIB = 2**20
REASON_BITS = {"gpu_idle": 0x1, "applications_clocks_setting": 0x2, "sw_power_cap": 0x4, "hw_slowdown": 0x8,
               "sync_boost": 0x10, "sw_thermal_slowdown": 0x20, "hw_thermal_slowdown": 0x40,
               "hw_power_brake_slowdown": 0x80, "display_clock_setting": 0x100}
BAD = ("MISMATCH", "MISSING", "UNEXPECTED")  # the verdicts that fail the check
SMI_FIELDS = "index,uuid,name,driver_version,memory.total,temperature.gpu,power.draw,clocks.sm,clocks.mem,utilization.gpu"


@dataclass(frozen=True)
class Band:
    """How far a collected value may be from the NVML readings taken before and after it."""

    factor: float = 1.0  # multiplicative: [low / factor, high * factor]
    slack: float = 0.0  # absolute, on top

    def holds(self, got: float, before: float, after: float) -> bool:
        low, high = min(before, after), max(before, after)
        return low / self.factor - self.slack <= got <= high * self.factor + self.slack


EXACT = Band()
MOVING = {"load": Band(slack=0.35), "clock": Band(factor=2.0), "power": Band(factor=1.5, slack=30.0),
          "heat": Band(slack=5.0), "pcie": Band(factor=4.0, slack=10e6), "memory": Band(factor=1.5, slack=2**30)}


@dataclass(frozen=True)
class Check:
    family: str
    labels: tuple[tuple[str, str], ...]  # beyond gpu and uuid
    source: str  # what NVML gave, for the report
    read: Callable[[Any, Any], float]  # raw NVML value -> base units
    band: Band = EXACT


def _field(n: Any, h: Any, field_id: int) -> float:
    (value,) = n.nvmlDeviceGetFieldValues(h, [field_id])
    if value.nvmlReturn != n.NVML_SUCCESS:
        raise n.NVMLError(value.nvmlReturn)
    member = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal", 6: "usVal"}[value.valueType]
    return float(getattr(value.value, member))


def _first(n: Any, h: Any, *names: str) -> int:
    for name in names:
        function = getattr(n, name, None)
        if function is None:
            continue
        try:
            return function(h)
        except n.NVMLError as exc:
            if exc.value != n.NVML_ERROR_FUNCTION_NOT_FOUND or name == names[-1]:
                raise
    raise AttributeError(names[-1])


def _reason(bit: int) -> Callable[[Any, Any], float]:
    def read(n: Any, h: Any) -> float:
        try:
            supported = _first(n, h, "nvmlDeviceGetSupportedClocksEventReasons",
                               "nvmlDeviceGetSupportedClocksThrottleReasons")
        except n.NVMLError as exc:
            if exc.value not in (n.NVML_ERROR_NOT_SUPPORTED, n.NVML_ERROR_FUNCTION_NOT_FOUND):
                raise
            supported = 0x1FF
        if not supported & bit:
            raise n.NVMLError(n.NVML_ERROR_NOT_SUPPORTED)  # the collector leaves unsupported reasons out
        active = _first(n, h, "nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons")
        return float(bool(active & bit))

    return read


def device_checks(n: Any) -> list[Check]:
    """What the collector should report for one device, from NVML's own calls and documented units."""
    checks = [
        Check("clary_gpu_utilization_ratio", (), "utilization.gpu %",
              lambda n, h: n.nvmlDeviceGetUtilizationRates(h).gpu / 100, MOVING["load"]),
        Check("clary_gpu_memory_copy_utilization_ratio", (), "utilization.memory %",
              lambda n, h: n.nvmlDeviceGetUtilizationRates(h).memory / 100, MOVING["load"]),
        Check("clary_gpu_memory_used_bytes", (), "memory.used B",
              lambda n, h: n.nvmlDeviceGetMemoryInfo(h).used, MOVING["memory"]),
        Check("clary_gpu_memory_total_bytes", (), "memory.total B", lambda n, h: n.nvmlDeviceGetMemoryInfo(h).total),
        Check("clary_gpu_temperature_celsius", (), "temperature C",
              lambda n, h: n.nvmlDeviceGetTemperature(h, n.NVML_TEMPERATURE_GPU), MOVING["heat"]),
        Check("clary_gpu_memory_temperature_celsius", (), "field MEMORY_TEMP C",
              lambda n, h: _field(n, h, n.NVML_FI_DEV_MEMORY_TEMP), MOVING["heat"]),
        Check("clary_gpu_power_watts", (), "power mW", lambda n, h: n.nvmlDeviceGetPowerUsage(h) / 1000,
              MOVING["power"]),
        Check("clary_gpu_energy_joules_total", (), "energy mJ",
              lambda n, h: n.nvmlDeviceGetTotalEnergyConsumption(h) / 1000),
        Check("clary_gpu_sm_clock_hertz", (), "clock SM MHz",
              lambda n, h: n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_SM) * 1e6, MOVING["clock"]),
        Check("clary_gpu_memory_clock_hertz", (), "clock MEM MHz",
              lambda n, h: n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_MEM) * 1e6, MOVING["clock"]),
        Check("clary_gpu_pcie_transmitted_bytes_per_second", (), "PCIe TX KB/s",
              lambda n, h: n.nvmlDeviceGetPcieThroughput(h, n.NVML_PCIE_UTIL_TX_BYTES) * 1024, MOVING["pcie"]),
        Check("clary_gpu_pcie_received_bytes_per_second", (), "PCIe RX KB/s",
              lambda n, h: n.nvmlDeviceGetPcieThroughput(h, n.NVML_PCIE_UTIL_RX_BYTES) * 1024, MOVING["pcie"]),
        Check("clary_gpu_pcie_replays_total", (), "PCIe replays", lambda n, h: n.nvmlDeviceGetPcieReplayCounter(h)),
        Check("clary_gpu_encoder_utilization_ratio", (), "encoder %",
              lambda n, h: n.nvmlDeviceGetEncoderUtilization(h)[0] / 100, MOVING["load"]),
        Check("clary_gpu_decoder_utilization_ratio", (), "decoder %",
              lambda n, h: n.nvmlDeviceGetDecoderUtilization(h)[0] / 100, MOVING["load"]),
        Check("clary_gpu_retired_pages_pending", (), "retired pages pending",
              lambda n, h: float(n.nvmlDeviceGetRetiredPagesPendingStatus(h) == n.NVML_FEATURE_ENABLED)),
        Check("clary_gpu_row_remap_pending", (), "remapped rows pending",
              lambda n, h: float(bool(n.nvmlDeviceGetRemappedRows(h)[2]))),
        Check("clary_gpu_row_remap_failed", (), "remapped rows failure",
              lambda n, h: float(bool(n.nvmlDeviceGetRemappedRows(h)[3]))),
    ]
    for reason, bit in REASON_BITS.items():
        checks.append(Check("clary_gpu_clock_event_reason_active", (("reason", reason),),
                            f"clock event reasons & {bit:#x}", _reason(bit)))
    for error, error_type in (("corrected", n.NVML_MEMORY_ERROR_TYPE_CORRECTED),
                              ("uncorrected", n.NVML_MEMORY_ERROR_TYPE_UNCORRECTED)):
        for scope, counter in (("volatile", n.NVML_VOLATILE_ECC), ("aggregate", n.NVML_AGGREGATE_ECC)):
            checks.append(Check("clary_gpu_ecc_errors_total", (("error", error), ("scope", scope)),
                                f"ECC {error} {scope}",
                                lambda n, h, e=error_type, c=counter: n.nvmlDeviceGetTotalEccErrors(h, e, c)))
    for error, cause, row in (("corrected", n.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS, 0),
                              ("uncorrected", n.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR, 1)):
        checks.append(Check("clary_gpu_retired_pages", (("error", error),), f"retired pages {error}",
                            lambda n, h, c=cause: len(n.nvmlDeviceGetRetiredPages(h, c))))
        checks.append(Check("clary_gpu_remapped_rows", (("error", error),), f"remapped rows {error}",
                            lambda n, h, i=row: n.nvmlDeviceGetRemappedRows(h)[i]))
    return checks


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _try(n: Any, read: Callable[..., Any], *args: Any) -> tuple[bool, Any]:
    """(True, read(*args)), or (False, None) where the device lacks it."""
    try:
        return True, read(*args)
    except n.NVMLError as exc:
        if exc.value in (n.NVML_ERROR_NOT_SUPPORTED, n.NVML_ERROR_FUNCTION_NOT_FOUND):
            return False, None
        raise


Expected = dict[tuple[str, tuple], tuple[bool, Any, str, Band]]


def snapshot(n: Any) -> Expected:
    """Every sample the collector should report, read from NVML.

    ``{(family, sorted labels): (supported, value in base units, NVML source, band)}``.
    """
    out: Expected = {}

    def expect(family: str, labels: tuple, ok: bool, value: Any, source: str, band: Band = EXACT) -> None:
        out[family, tuple(sorted(labels))] = (ok, value, source, band)

    driver = _text(n.nvmlSystemGetDriverVersion())
    for index in range(n.nvmlDeviceGetCount()):
        h = n.nvmlDeviceGetHandleByIndex(index)
        gpu = (("gpu", str(index)), ("uuid", _text(n.nvmlDeviceGetUUID(h))))
        name = _text(n.nvmlDeviceGetName(h))
        expect("clary_gpu_info", (*gpu, ("model_name", name), ("driver_version", driver)), True, 1.0,
               "nvmlDeviceGetName, nvmlSystemGetDriverVersion")
        for check in device_checks(n):
            ok, value = _try(n, check.read, n, h)
            expect(check.family, (*gpu, *check.labels), ok, value, check.source, check.band)
        ok, mode = _try(n, n.nvmlDeviceGetMigMode, h)
        if ok and mode[0] == n.NVML_DEVICE_MIG_ENABLE:
            for slot in range(n.nvmlDeviceGetMaxMigDeviceCount(h)):
                try:
                    mig = n.nvmlDeviceGetMigDeviceHandleByIndex(h, slot)
                except n.NVMLError as exc:
                    if exc.value == n.NVML_ERROR_NOT_FOUND:
                        continue
                    raise
                ids = (*gpu, ("gpu_instance_id", str(n.nvmlDeviceGetGpuInstanceId(mig))),
                       ("compute_instance_id", str(n.nvmlDeviceGetComputeInstanceId(mig))))
                ok, memory = _try(n, n.nvmlDeviceGetMemoryInfo, mig)
                expect("clary_gpu_mig_memory_used_bytes", ids, ok, memory and memory.used, "MIG memory.used B",
                       MOVING["memory"])
                expect("clary_gpu_mig_memory_total_bytes", ids, ok, memory and memory.total, "MIG memory.total B")
    return out


def collect(nvml: Any) -> tuple[dict[tuple, float], GpuCollector]:
    """One scrape of the real collector, parsed back from the text exposition."""
    collector = GpuCollector(nvml=nvml)
    registry = CollectorRegistry()
    registry.register(CollectorSet([collector]))
    text = generate_latest(registry).decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    return samples, collector


def compare(before: Expected, samples: dict, after: Expected) -> list[str]:
    """One report line per sample, expected or collected; a mismatch starts with anything but OK."""
    lines = []
    collected = {key: value for key, value in samples.items()
                 if key[0].startswith("clary_gpu_") and key[0] not in ("clary_gpu_devices", "clary_gpu_mig_info")}
    for key in sorted(set(before) | set(collected)):
        family, labels = key
        got = collected.get(key)
        ok_b, raw_b, source, band = before.get(key, (False, None, "no NVML reading", EXACT))
        ok_a, raw_a, _, _ = after.get(key, (False, None, "", EXACT))
        where = family + "{" + ",".join(f'{k}="{v}"' for k, v in labels) + "}"
        if not (ok_b and ok_a):
            verdict = "OK (not supported)" if got is None else f"UNEXPECTED ({source or 'not supported'})"
            lines.append(f"{verdict:<34} {where} = {got}")
        elif got is None:
            lines.append(f"{'MISSING':<34} {where}  <- {source}: {raw_b}")
        else:
            verdict = "OK" if band.holds(got, float(raw_b), float(raw_a)) else "MISMATCH"
            lines.append(f"{verdict:<34} {where} = {got:g}  <- {source}: {float(raw_b):g} .. {float(raw_a):g}")
    return lines


def nvidia_smi(path: str | None, samples: dict) -> list[str]:
    """nvidia-smi's view, printed, and the fields it shares with the samples compared."""
    if not path:
        return ["SKIPPED nvidia-smi: not found"]
    full = subprocess.run([path, f"--query-gpu={SMI_FIELDS}", "--format=csv"], capture_output=True, text=True,
                          timeout=60, check=False)
    print(full.stdout.rstrip() or full.stderr.rstrip())
    rows = subprocess.run([path, f"--query-gpu={SMI_FIELDS}", "--format=csv,noheader,nounits"],
                          capture_output=True, text=True, timeout=60, check=False)
    if rows.returncode != 0:
        return [f"MISMATCH nvidia-smi failed ({rows.returncode}): {rows.stderr.strip()}"]
    values = {(name, tuple(sorted(labels))): v for (name, labels), v in samples.items()}
    info = {dict(labels)["gpu"]: dict(labels) for (name, labels) in values if name == "clary_gpu_info"}
    lines = []
    for row in rows.stdout.strip().splitlines():
        index, uuid, name, driver, total, temp, power, sm, mem, util = (c.strip() for c in row.split(","))
        labels = info.get(index, {})
        gpu = tuple(sorted((("gpu", index), ("uuid", labels.get("uuid", "")))))

        def sample(family: str, gpu: tuple = gpu) -> float | None:
            return values.get((family, gpu))

        pairs = [("uuid", uuid, labels.get("uuid"), None), ("name", name, labels.get("model_name"), None),
                 ("driver_version", driver, labels.get("driver_version"), None),
                 ("memory.total MiB", total, sample("clary_gpu_memory_total_bytes"), (MIB, Band(factor=1.03))),
                 ("temperature.gpu C", temp, sample("clary_gpu_temperature_celsius"), (1, MOVING["heat"])),
                 ("power.draw W", power, sample("clary_gpu_power_watts"), (1, MOVING["power"])),
                 ("clocks.sm MHz", sm, sample("clary_gpu_sm_clock_hertz"), (1e6, MOVING["clock"])),
                 ("clocks.mem MHz", mem, sample("clary_gpu_memory_clock_hertz"), (1e6, MOVING["clock"])),
                 ("utilization.gpu %", util, sample("clary_gpu_utilization_ratio"), (0.01, MOVING["load"]))]
        for field, smi, got, numeric in pairs:
            if numeric is None:
                ok = smi == got
            elif smi.startswith("[") or got is None:  # [N/A], [Not Supported]; or not collected
                lines.append(f"{'OK (n/a)':<34} nvidia-smi gpu {index} {field} = {smi}, collected {got}")
                continue
            else:
                scale, band = numeric
                ok = band.holds(got, float(smi) * scale, float(smi) * scale)
            verdict = "OK" if ok else "MISMATCH"
            lines.append(f"{verdict:<34} nvidia-smi gpu {index} {field} = {smi}, collected {got}")
    return lines


def _oracle_init(nvml: Any) -> bool:
    """nvmlInit for the oracle's own readings (NVML counts init/shutdown pairs); False: no driver."""
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        if exc.value in (nvml.NVML_ERROR_LIBRARY_NOT_FOUND, nvml.NVML_ERROR_DRIVER_NOT_LOADED):
            return False
        raise
    return True


def run(nvml: Any, require_gpu: bool, smi: str | None) -> int:
    try:
        oracle = _oracle_init(nvml)
        try:
            before = snapshot(nvml) if oracle else {}
            samples, collector = collect(nvml)  # the one collection
            after = snapshot(nvml) if oracle else {}
            collector.close()
        finally:
            if oracle:
                nvml.nvmlShutdown()
    except nvml.NVMLError as exc:
        print(f"FAIL: NVML itself fails here ({type(exc).__name__}: {exc}); see nvidia-smi and dmesg")
        return 1
    up = samples.get(("clary_exporter_collector_up", (("collector", "gpu"),)))
    errors = samples.get(("clary_exporter_collector_errors_total", (("collector", "gpu"),)))
    devices = samples.get(("clary_gpu_devices", ()))
    took = samples.get(("clary_exporter_collector_duration_seconds", (("collector", "gpu"),)))
    print(f"collector: up {up}, errors {errors}, clary_gpu_devices {devices}, took {took * 1000:.1f} ms")
    if up != 1.0 or errors != 0.0:
        print("FAIL: the GPU collector failed (its log line above names NVML's error)")
        return 1
    if not devices:
        state = "NVML reports no devices" if oracle else "no NVML library or driver"
        print(f"no NVIDIA GPU/driver here ({state}; clary_gpu_devices 0): nothing to check")
        return 2 if require_gpu else 0
    lines = compare(before, samples, after) + nvidia_smi(smi, samples)
    print("\n".join(lines))
    bad = [line for line in lines if line.startswith(BAD)]
    print(f"{len(lines)} checks, {len(bad)} mismatches")
    return 1 if bad else 0


def main(argv: list[str] | None = None, nvml: Any = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--require-gpu", action="store_true", help="exit 2 when no GPU is found (default: exit 0)")
    parser.add_argument("--nvidia-smi", default=shutil.which("nvidia-smi"),
                        help="nvidia-smi to compare with (default: from PATH; empty: skip)")
    args = parser.parse_args(argv)
    if nvml is None:
        try:
            nvml = importlib.import_module("pynvml")
        except ImportError:
            print("no NVIDIA GPU/driver here: pynvml (nvidia-ml-py) is not installed")
            return 2 if args.require_gpu else 0
    return run(nvml, args.require_gpu, args.nvidia_smi or None)


if __name__ == "__main__":
    sys.exit(main())
