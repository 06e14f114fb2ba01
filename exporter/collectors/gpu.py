"""NVIDIA GPU metrics read through NVML at scrape time.

The contract with the alert rules (see ``CollectorSet`` for how it is
reported):

* absent: no pynvml, NVML_ERROR_LIBRARY_NOT_FOUND or
  NVML_ERROR_DRIVER_NOT_LOADED from ``nvmlInit``, or zero devices:
  ``CollectorAbsent`` -> ``collector_up 0``, no error counted.
* failing: any other NVML failure, at init or after it worked (device count,
  handle, UUID or a required field raising): a normal exception ->
  ``collector_up 0`` and ``errors_total`` +1. NVML is shut down
  best-effort and re-initialised later.
* waiting: after an absent or failing attempt the next one is only made
  once a backoff has passed (``initial_backoff`` doubling up to
  ``max_backoff``, reset by a success). Scrapes in between make no NVML
  call and raise ``NvmlRetryPending`` (a ``CollectorAbsent``): up 0, no
  error counted. So ``errors_total`` counts real failed attempts only, at
  least one per ``max_backoff`` while NVML stays broken.
* recovery: the first allowed attempt that works brings the metrics back,
  without a restart.

A field a device does not support (NVML_ERROR_NOT_SUPPORTED, e.g. power
on some boards) drops that one sample, not the collector.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

from prometheus_client.core import Metric

from exporter.collectors.base import CollectorAbsent
from exporter.collectors.registry import register
from exporter.families import new_family

log = logging.getLogger(__name__)

Getter = Callable[[Any, Any], float]

# (catalog family, reading of one device handle). Memory is read twice per
# device: two cheap driver calls keep the table flat.
FIELDS: tuple[tuple[str, Getter], ...] = (
    ("clary_gpu_utilization_ratio", lambda nvml, h: nvml.nvmlDeviceGetUtilizationRates(h).gpu / 100),
    ("clary_gpu_memory_used_bytes", lambda nvml, h: nvml.nvmlDeviceGetMemoryInfo(h).used),
    ("clary_gpu_memory_total_bytes", lambda nvml, h: nvml.nvmlDeviceGetMemoryInfo(h).total),
    ("clary_gpu_temperature_celsius",
     lambda nvml, h: nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU)),
    ("clary_gpu_power_watts", lambda nvml, h: nvml.nvmlDeviceGetPowerUsage(h) / 1000),
)

_OK, _ABSENT, _FAILING = "ok", "absent", "failing"


class NvmlRetryPending(CollectorAbsent):
    """NVML was absent or failing and the backoff has not passed yet.

    A ``CollectorAbsent`` so that skipped attempts read as up 0 without
    inflating ``errors_total`` at the scrape rate.
    """


class _NoDevices(Exception):
    """NVML works but reports zero devices."""


@register("gpu", help="NVIDIA GPU readings through NVML (up 0 on a host without a GPU)")
class GpuCollector:
    """Per-device NVML readings that survive (and recover from) a broken driver."""

    name = "gpu"

    def __init__(
        self,
        nvml: Any = None,
        clock: Callable[[], float] = time.monotonic,
        initial_backoff: float = 1.0,
        max_backoff: float = 300.0,
    ):
        self._nvml: Any = nvml
        self._clock = clock
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._backoff = initial_backoff
        self._next_attempt = float("-inf")
        self._initialised = False
        self._state: str | None = None  # None until the first attempt
        self._last_reason = ""
        self._lock = threading.Lock()  # scrapes may run concurrently

    def collect(self) -> list[Metric]:
        with self._lock:
            if not self._initialised:
                now = self._clock()
                if now < self._next_attempt:
                    raise NvmlRetryPending(
                        f"NVML {self._state} ({self._last_reason}); "
                        f"next attempt in {self._next_attempt - now:.1f}s"
                    )
                self._initialise()
            try:
                families = self._read()
            except _NoDevices:
                self._shutdown()
                self._give_up(_ABSENT, "no GPU devices")
                raise CollectorAbsent("NVML reports no GPU devices") from None
            except Exception as exc:
                self._shutdown()
                self._give_up(_FAILING, _describe(exc))
                raise
            self._succeeded()
            return families

    def close(self) -> None:
        """Release NVML (exporter shutdown); a later scrape re-initialises."""
        with self._lock:
            self._shutdown()

    # --- state -----------------------------------------------------------

    def _initialise(self) -> None:
        """Import pynvml if needed and call nvmlInit, classifying failures."""
        nvml = self._nvml
        if nvml is None:
            try:
                nvml = self._nvml = _import_pynvml()
            except ImportError as exc:
                self._give_up(_ABSENT, f"pynvml not importable: {exc}")
                raise CollectorAbsent("pynvml is not installed") from exc
        try:
            nvml.nvmlInit()
        except Exception as exc:
            if _is_absent_code(nvml, exc):
                self._give_up(_ABSENT, _describe(exc))
                raise CollectorAbsent(f"NVML unavailable: {_describe(exc)}") from exc
            self._give_up(_FAILING, _describe(exc))
            raise
        self._initialised = True

    def _shutdown(self) -> None:
        """Best effort: a lost GPU often makes nvmlShutdown fail too."""
        if not self._initialised:
            return
        self._initialised = False
        try:
            self._nvml.nvmlShutdown()
        except Exception as exc:
            log.debug("nvmlShutdown failed: %s", _describe(exc))

    def _give_up(self, state: str, reason: str) -> None:
        """Record a failed attempt and schedule the next one."""
        self._next_attempt = self._clock() + self._backoff
        self._backoff = min(self._backoff * 2, self._max_backoff)
        if state != self._state:
            level = logging.INFO if state == _ABSENT else logging.WARNING
            log.log(level, "GPU collector %s: %s; retrying with backoff up to %ss",
                    state, reason, self._max_backoff)
        self._state, self._last_reason = state, reason

    def _succeeded(self) -> None:
        if self._state != _OK:
            if self._state is None:
                log.info("GPU collector: NVML initialised")
            else:
                log.info("GPU collector recovered (was %s: %s)", self._state, self._last_reason)
        self._state, self._last_reason = _OK, ""
        self._backoff = self._initial_backoff
        self._next_attempt = float("-inf")

    # --- reading -----------------------------------------------------------

    def _read(self) -> list[Metric]:
        nvml = self._nvml
        count = nvml.nvmlDeviceGetCount()
        if count == 0:
            raise _NoDevices
        families = {name: new_family(name) for name, _ in FIELDS}
        for index in range(count):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            labels = [str(index), _text(nvml.nvmlDeviceGetUUID(handle))]
            for name, getter in FIELDS:
                try:
                    value = getter(nvml, handle)
                except Exception as exc:
                    if _code(exc) != nvml.NVML_ERROR_NOT_SUPPORTED:
                        raise
                    continue  # this board lacks the sensor: omit the sample
                families[name].add_metric(labels, float(value))
        return list(families.values())


def _import_pynvml() -> ModuleType:
    return importlib.import_module("pynvml")


def _code(exc: BaseException) -> int | None:
    """NVML error code of an NVMLError (its ``value``), None for anything else."""
    value = getattr(exc, "value", None)
    return value if isinstance(value, int) else None


def _is_absent_code(nvml: Any, exc: BaseException) -> bool:
    return _code(exc) in (nvml.NVML_ERROR_LIBRARY_NOT_FOUND, nvml.NVML_ERROR_DRIVER_NOT_LOADED)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
