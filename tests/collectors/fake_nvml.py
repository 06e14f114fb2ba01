"""A fake pynvml: the slice of nvidia-ml-py that GpuCollector uses, with switchable failures.

Faked at the hardware boundary only: the collector gets this object where it
would import ``pynvml``. tests/collectors/test_gpu.py checks it against the
real module (constants, error codes and classes, every call it fakes), so the
collector is tested against NVML's contract.
"""

from __future__ import annotations

from collections import namedtuple
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import ClassVar

# Codes and class names as in nvidia-ml-py; test_fake_matches_real_pynvml checks them.
ERROR_CODES = {
    "NVML_ERROR_UNINITIALIZED": ("NVMLError_Uninitialized", 1),
    "NVML_ERROR_NOT_SUPPORTED": ("NVMLError_NotSupported", 3),
    "NVML_ERROR_NOT_FOUND": ("NVMLError_NotFound", 6),
    "NVML_ERROR_DRIVER_NOT_LOADED": ("NVMLError_DriverNotLoaded", 9),
    "NVML_ERROR_LIBRARY_NOT_FOUND": ("NVMLError_LibraryNotFound", 12),
    "NVML_ERROR_FUNCTION_NOT_FOUND": ("NVMLError_FunctionNotFound", 13),
    "NVML_ERROR_GPU_IS_LOST": ("NVMLError_GpuIsLost", 15),
    "NVML_ERROR_UNKNOWN": ("NVMLError_Unknown", 999),
}
# Other constants the collector reads, with nvidia-ml-py's values (checked too).
CONSTANTS = {
    "NVML_SUCCESS": 0,
    "NVML_TEMPERATURE_GPU": 0,
    "NVML_CLOCK_SM": 1,
    "NVML_CLOCK_MEM": 2,
    "NVML_PCIE_UTIL_TX_BYTES": 0,
    "NVML_PCIE_UTIL_RX_BYTES": 1,
    "NVML_MEMORY_ERROR_TYPE_CORRECTED": 0,
    "NVML_MEMORY_ERROR_TYPE_UNCORRECTED": 1,
    "NVML_VOLATILE_ECC": 0,
    "NVML_AGGREGATE_ECC": 1,
    "NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS": 0,
    "NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR": 1,
    "NVML_FEATURE_DISABLED": 0,
    "NVML_FEATURE_ENABLED": 1,
    "NVML_DEVICE_MIG_DISABLE": 0,
    "NVML_DEVICE_MIG_ENABLE": 1,
    "NVML_FI_DEV_MEMORY_TEMP": 82,
    "NVML_VALUE_TYPE_DOUBLE": 0,
    "NVML_VALUE_TYPE_UNSIGNED_INT": 1,
}


class NVMLError(Exception):
    """Like pynvml's: ``NVMLError(code)`` builds the subclass for that code."""

    _by_code: ClassVar[dict[int, type[NVMLError]]] = {}

    def __new__(cls, value: int):
        kind = NVMLError._by_code.get(value, cls) if cls is NVMLError else cls
        obj = Exception.__new__(kind)
        obj.value = value
        return obj

    def __init__(self, value: int):
        super().__init__(value)


for _class_name, _code in ERROR_CODES.values():
    NVMLError._by_code[_code] = type(_class_name, (NVMLError,), {})

Utilization = namedtuple("Utilization", "gpu memory")
Memory = namedtuple("Memory", "total free used")


@dataclass
class Mig:
    """One MIG device (a GPU instance / compute instance pair) of a GPU in MIG mode."""

    gpu_instance_id: int
    compute_instance_id: int
    name: str | bytes
    uuid: str | bytes
    memory_used: int = 0
    memory_total: int = 0


@dataclass(frozen=True)
class MigHandle:
    parent: int
    slot: int


@dataclass
class Device:
    """One GPU; units as NVML gives them (%, MHz, mW, mJ, KB/s)."""

    uuid: str | bytes
    utilization: int = 0
    memory_used: int = 0
    memory_total: int = 0
    temperature: int = 0
    power_mw: int = 0
    name: str | bytes = "NVIDIA Fake GPU"
    memory_copy_utilization: int = 0
    memory_temperature: int | float | None = None  # None: the field reports NOT_SUPPORTED
    sm_clock_mhz: int = 0
    memory_clock_mhz: int = 0
    clock_reasons: int = 0
    supported_clock_reasons: int = 0x1FF
    energy_mj: int = 0
    pcie_tx_kb: int = 0
    pcie_rx_kb: int = 0
    pcie_replays: int = 0
    encoder: int = 0
    decoder: int = 0
    ecc: dict[tuple[int, int], int] = field(default_factory=dict)  # (error type, counter type) -> count
    retired_pages: dict[int, list[int]] = field(default_factory=dict)  # cause -> page addresses
    retired_pending: bool = False
    remapped_rows: tuple[int, int, bool, bool] = (0, 0, False, False)  # corrected, uncorrected, pending, failed
    mig_mode: int | None = None  # None: the GPU has no MIG (NOT_SUPPORTED)
    mig: list[Mig | None] = field(default_factory=list)  # slots; None is an empty one


class FakeNvml:
    """The slice of pynvml the collector uses, with switchable failures.

    ``init_error`` / ``count_error``: code nvmlInit / nvmlDeviceGetCount raise.
    ``device_errors[(handle, call)]``: code a device call raises; a handle is
    the device index, or a ``MigHandle``; ``call`` is the short name passed
    to ``_device`` below. Device calls made while not initialised raise
    Uninitialized, as NVML does; like NVML, init and shutdown are counted (it
    stays initialised until every nvmlInit has had its nvmlShutdown).
    """

    NVMLError = NVMLError

    def __init__(self, devices: list[Device], driver_version: str | bytes = "550.54.15"):
        for constant, (class_name, code) in ERROR_CODES.items():
            setattr(self, constant, code)
            setattr(self, class_name, NVMLError._by_code[code])
        for constant, value in CONSTANTS.items():
            setattr(self, constant, value)
        self.devices = devices
        self.driver_version = driver_version
        self.init_error: int | None = None
        self.count_error: int | None = None
        self.device_errors: dict[tuple[object, str], int] = {}
        self.refs = 0
        self.init_calls = 0
        self.shutdown_calls = 0

    # --- library -------------------------------------------------------------

    def nvmlInit(self) -> None:
        self.init_calls += 1
        if self.init_error is not None:
            raise NVMLError(self.init_error)
        self.refs += 1

    def nvmlShutdown(self) -> None:
        self.shutdown_calls += 1
        self._check()
        self.refs -= 1

    @property
    def initialised(self) -> bool:
        return self.refs > 0

    def nvmlSystemGetDriverVersion(self) -> str | bytes:
        self._check()
        return self.driver_version

    def nvmlDeviceGetCount(self) -> int:
        self._check()
        if self.count_error is not None:
            raise NVMLError(self.count_error)
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        self._check()
        return index

    # --- identity and the original five ----------------------------------------

    def nvmlDeviceGetUUID(self, handle) -> str | bytes:
        return self._device(handle, "uuid").uuid

    def nvmlDeviceGetName(self, handle) -> str | bytes:
        return self._device(handle, "name").name

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> Utilization:
        d = self._device(handle, "utilization")
        return Utilization(d.utilization, d.memory_copy_utilization)

    def nvmlDeviceGetMemoryInfo(self, handle) -> Memory:
        d = self._device(handle, "memory")
        return Memory(d.memory_total, d.memory_total - d.memory_used, d.memory_used)

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        assert sensor == self.NVML_TEMPERATURE_GPU
        return self._device(handle, "temperature").temperature

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        return self._device(handle, "power").power_mw

    # --- dcgm-exporter's default set ----------------------------------------------

    def nvmlDeviceGetFieldValues(self, handle: int, field_ids: list[int]) -> list[SimpleNamespace]:
        d = self._device(handle, "field_values")
        assert field_ids == [self.NVML_FI_DEV_MEMORY_TEMP]
        if d.memory_temperature is None:
            return [SimpleNamespace(fieldId=field_ids[0], nvmlReturn=self.NVML_ERROR_NOT_SUPPORTED,
                                    valueType=0, value=SimpleNamespace(dVal=0.0))]
        if isinstance(d.memory_temperature, float):
            value_type, value = self.NVML_VALUE_TYPE_DOUBLE, SimpleNamespace(dVal=d.memory_temperature)
        else:
            value_type, value = self.NVML_VALUE_TYPE_UNSIGNED_INT, SimpleNamespace(uiVal=d.memory_temperature)
        return [SimpleNamespace(fieldId=field_ids[0], nvmlReturn=self.NVML_SUCCESS, valueType=value_type,
                                value=value)]

    def nvmlDeviceGetClockInfo(self, handle: int, clock: int) -> int:
        d = self._device(handle, "clock")
        return {self.NVML_CLOCK_SM: d.sm_clock_mhz, self.NVML_CLOCK_MEM: d.memory_clock_mhz}[clock]

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: int) -> int:
        return self._device(handle, "clock_reasons").clock_reasons

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: int) -> int:
        return self._device(handle, "clock_reasons").clock_reasons

    def nvmlDeviceGetSupportedClocksEventReasons(self, handle: int) -> int:
        return self._device(handle, "supported_clock_reasons").supported_clock_reasons

    def nvmlDeviceGetSupportedClocksThrottleReasons(self, handle: int) -> int:
        return self._device(handle, "supported_clock_reasons").supported_clock_reasons

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: int) -> int:
        return self._device(handle, "energy").energy_mj

    def nvmlDeviceGetPcieThroughput(self, handle: int, counter: int) -> int:
        d = self._device(handle, "pcie_throughput")
        return {self.NVML_PCIE_UTIL_TX_BYTES: d.pcie_tx_kb, self.NVML_PCIE_UTIL_RX_BYTES: d.pcie_rx_kb}[counter]

    def nvmlDeviceGetPcieReplayCounter(self, handle: int) -> int:
        return self._device(handle, "pcie_replay").pcie_replays

    def nvmlDeviceGetEncoderUtilization(self, handle: int) -> list[int]:
        return [self._device(handle, "encoder").encoder, 167000]

    def nvmlDeviceGetDecoderUtilization(self, handle: int) -> list[int]:
        return [self._device(handle, "decoder").decoder, 167000]

    def nvmlDeviceGetTotalEccErrors(self, handle: int, error_type: int, counter_type: int) -> int:
        assert error_type in (0, 1) and counter_type in (0, 1)
        return self._device(handle, "ecc").ecc.get((error_type, counter_type), 0)

    def nvmlDeviceGetRetiredPages(self, handle: int, cause: int) -> list[int]:
        assert cause in (0, 1)
        return list(self._device(handle, "retired_pages").retired_pages.get(cause, []))

    def nvmlDeviceGetRetiredPagesPendingStatus(self, handle: int) -> int:
        d = self._device(handle, "retired_pending")
        return self.NVML_FEATURE_ENABLED if d.retired_pending else self.NVML_FEATURE_DISABLED

    def nvmlDeviceGetRemappedRows(self, handle: int) -> tuple[int, int, int, int]:
        corrected, uncorrected, pending, failed = self._device(handle, "remapped_rows").remapped_rows
        return corrected, uncorrected, int(pending), int(failed)

    # --- MIG -------------------------------------------------------------------------

    def nvmlDeviceGetMigMode(self, handle: int) -> list[int]:
        d = self._device(handle, "mig_mode")
        if d.mig_mode is None:
            raise NVMLError(self.NVML_ERROR_NOT_SUPPORTED)
        return [d.mig_mode, d.mig_mode]

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: int) -> int:
        return len(self._device(handle, "mig_count").mig)

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: int, index: int) -> MigHandle:
        if self._device(handle, "mig_handle").mig[index] is None:
            raise NVMLError(self.NVML_ERROR_NOT_FOUND)
        return MigHandle(handle, index)

    def nvmlDeviceGetGpuInstanceId(self, handle: MigHandle) -> int:
        return self._device(handle, "gpu_instance_id").gpu_instance_id

    def nvmlDeviceGetComputeInstanceId(self, handle: MigHandle) -> int:
        return self._device(handle, "compute_instance_id").compute_instance_id

    # --- plumbing ------------------------------------------------------------------------

    def _check(self) -> None:
        if not self.initialised:
            raise NVMLError(self.NVML_ERROR_UNINITIALIZED)

    def _device(self, handle, call: str):
        self._check()
        code = self.device_errors.get((handle, call))
        if code is not None:
            raise NVMLError(code)
        if isinstance(handle, MigHandle):
            return self.devices[handle.parent].mig[handle.slot]
        return self.devices[handle]
