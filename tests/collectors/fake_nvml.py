"""A fake pynvml: the slice of nvidia-ml-py that GpuCollector uses, with switchable failures.

tests/collectors/test_gpu.py checks it against the real module (codes, class
names, the calls it fakes), so the collector is tested against NVML's contract.
"""

from __future__ import annotations

from collections import namedtuple
from dataclasses import dataclass

# Codes and class names as in nvidia-ml-py; test_fake_matches_real_pynvml checks them.
ERROR_CODES = {
    "NVML_ERROR_UNINITIALIZED": ("NVMLError_Uninitialized", 1),
    "NVML_ERROR_NOT_SUPPORTED": ("NVMLError_NotSupported", 3),
    "NVML_ERROR_DRIVER_NOT_LOADED": ("NVMLError_DriverNotLoaded", 9),
    "NVML_ERROR_LIBRARY_NOT_FOUND": ("NVMLError_LibraryNotFound", 12),
    "NVML_ERROR_GPU_IS_LOST": ("NVMLError_GpuIsLost", 15),
    "NVML_ERROR_UNKNOWN": ("NVMLError_Unknown", 999),
}


class NVMLError(Exception):
    """Like pynvml's: ``NVMLError(code)`` builds the subclass for that code."""

    _by_code: dict[int, type[NVMLError]] = {}

    def __new__(cls, value: int):
        if cls is NVMLError:
            cls = NVMLError._by_code.get(value, cls)
        obj = Exception.__new__(cls)
        obj.value = value
        return obj

    def __init__(self, value: int):
        super().__init__(value)


for _class_name, _code in ERROR_CODES.values():
    NVMLError._by_code[_code] = type(_class_name, (NVMLError,), {})

Utilization = namedtuple("Utilization", "gpu memory")
Memory = namedtuple("Memory", "total free used")


@dataclass
class Device:
    uuid: str | bytes
    utilization: int = 0
    memory_used: int = 0
    memory_total: int = 0
    temperature: int = 0
    power_mw: int = 0


class FakeNvml:
    """The slice of pynvml the collector uses, with switchable failures.

    ``init_error`` / ``count_error``: code nvmlInit / nvmlDeviceGetCount raise.
    ``device_errors[(index, call)]``: code a device call raises.
    Device calls made while not initialised raise Uninitialized, as NVML does.
    """

    NVMLError = NVMLError
    NVML_TEMPERATURE_GPU = 0

    def __init__(self, devices: list[Device]):
        for constant, (class_name, code) in ERROR_CODES.items():
            setattr(self, constant, code)
            setattr(self, class_name, NVMLError._by_code[code])
        self.devices = devices
        self.init_error: int | None = None
        self.count_error: int | None = None
        self.device_errors: dict[tuple[int, str], int] = {}
        self.initialised = False
        self.init_calls = 0
        self.shutdown_calls = 0

    def nvmlInit(self) -> None:
        self.init_calls += 1
        if self.init_error is not None:
            raise NVMLError(self.init_error)
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self.shutdown_calls += 1
        self._check()
        self.initialised = False

    def nvmlDeviceGetCount(self) -> int:
        self._check()
        if self.count_error is not None:
            raise NVMLError(self.count_error)
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        self._check()
        return index

    def nvmlDeviceGetUUID(self, handle: int) -> str | bytes:
        return self._device(handle, "uuid").uuid

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> Utilization:
        return Utilization(self._device(handle, "utilization").utilization, 0)

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Memory:
        d = self._device(handle, "memory")
        return Memory(d.memory_total, d.memory_total - d.memory_used, d.memory_used)

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        assert sensor == self.NVML_TEMPERATURE_GPU
        return self._device(handle, "temperature").temperature

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        return self._device(handle, "power").power_mw

    def _check(self) -> None:
        if not self.initialised:
            raise NVMLError(self.NVML_ERROR_UNINITIALIZED)

    def _device(self, handle: int, call: str) -> Device:
        self._check()
        code = self.device_errors.get((handle, call))
        if code is not None:
            raise NVMLError(code)
        return self.devices[handle]
