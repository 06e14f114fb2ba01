"""NVIDIA GPU metrics read through NVML at scrape time.

What is read per device, and how unsupported readings are dropped, is in
``exporter.collectors._nvml`` (dcgm-exporter's default set where NVML has
it). Per-device families carry ``gpu`` (index) and ``uuid`` only; the model
name and driver version are in ``clary_gpu_info``, like node_exporter's
``node_uname_info``: a driver upgrade then changes one series, not every
series of the GPU. MIG devices get their own families, labelled with the
parent's ``gpu``/``uuid`` and their ``gpu_instance_id``/``compute_instance_id``.

The contract with the dashboards and alert rules (see ``CollectorSet`` for
how it is reported):

* no GPU: no pynvml, NVML_ERROR_LIBRARY_NOT_FOUND or
  NVML_ERROR_DRIVER_NOT_LOADED from ``nvmlInit``, or zero devices: the
  collector succeeds (up 1) with ``clary_gpu_devices 0`` and no per-device
  series. A host without a GPU is a fact, not a failure; a GPU that
  disappears shows as ``clary_gpu_devices`` falling (ClaryGpuDevicesMissing).
* failing: any other NVML failure, at init or after it worked (device count,
  handle, UUID or a reading raising something other than NOT_SUPPORTED): a
  normal exception -> ``collector_up 0`` and ``errors_total`` +1. NVML is
  shut down best-effort and re-initialised later.
* waiting: after a no-GPU or failing attempt the next one is only made
  once a backoff has passed (``initial_backoff`` doubling up to
  ``max_backoff``, reset by a success). Scrapes in between make no NVML
  call: after no-GPU they repeat ``clary_gpu_devices 0``; after a failure
  they raise ``NvmlRetryPending`` (a ``CollectorAbsent``: up 0, no error
  counted). So ``errors_total`` counts real failed attempts only, at least
  one per ``max_backoff`` while NVML stays broken.
* recovery: the first allowed attempt that works brings the metrics back,
  without a restart.
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

from exporter.catalog import CATALOG
from exporter.collectors._nvml import code, mig_devices, read_device, text, unsupported
from exporter.collectors.base import CollectorAbsent
from exporter.collectors.registry import register
from exporter.families import new_family

log = logging.getLogger(__name__)

# Every family of the catalog's gpu group; a scrape leaves out the empty ones.
GPU_FAMILIES = tuple(s.name for s in CATALOG if s.group == "gpu")
DEVICES = "clary_gpu_devices"

_OK, _ABSENT, _FAILING = "ok", "absent", "failing"


class NvmlRetryPending(CollectorAbsent):
    """NVML was failing and the backoff has not passed yet.

    A ``CollectorAbsent`` so that skipped attempts read as up 0 without
    inflating ``errors_total`` at the scrape rate.
    """


class _NoDevices(Exception):
    """NVML works but reports zero devices."""


@register("gpu", help="NVIDIA GPU readings through NVML (clary_gpu_devices 0 on a host without a GPU)")
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
                    if self._state == _ABSENT:
                        return _no_gpu()
                    raise NvmlRetryPending(
                        f"NVML {self._state} ({self._last_reason}); "
                        f"next attempt in {self._next_attempt - now:.1f}s"
                    )
                if not self._initialise():
                    return _no_gpu()
            try:
                families = self._read()
            except _NoDevices:
                self._shutdown()
                self._give_up(_ABSENT, "no GPU devices")
                return _no_gpu()
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

    def _initialise(self) -> bool:
        """Import pynvml if needed and call nvmlInit: False when there is no GPU stack."""
        nvml = self._nvml
        if nvml is None:
            try:
                nvml = self._nvml = _import_pynvml()
            except ImportError as exc:
                self._give_up(_ABSENT, f"pynvml not importable: {exc}")
                return False
        try:
            nvml.nvmlInit()
        except Exception as exc:
            if _is_absent_code(nvml, exc):
                self._give_up(_ABSENT, _describe(exc))
                return False
            self._give_up(_FAILING, _describe(exc))
            raise
        self._initialised = True
        return True

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
        """Record an attempt that found no GPU or failed, and schedule the next one."""
        self._next_attempt = self._clock() + self._backoff
        self._backoff = min(self._backoff * 2, self._max_backoff)
        if state != self._state:
            if state == _ABSENT:
                log.info("GPU collector: no GPU (%s); looking again with backoff up to %ss",
                         reason, self._max_backoff)
            else:
                log.warning("GPU collector failing: %s; retrying with backoff up to %ss",
                            reason, self._max_backoff)
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
        families = {name: new_family(name) for name in GPU_FAMILIES}
        families[DEVICES].add_metric([], count)
        driver = _optional(nvml, nvml.nvmlSystemGetDriverVersion)
        for index in range(count):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            gpu = [str(index), text(nvml.nvmlDeviceGetUUID(handle))]
            model = _optional(nvml, nvml.nvmlDeviceGetName, handle)
            families["clary_gpu_info"].add_metric([*gpu, model, driver], 1)
            for family, extra, value in read_device(nvml, handle):
                families[family].add_metric([*gpu, *extra], float(value))
            for mig in mig_devices(nvml, handle):
                ids = [*gpu, mig.gpu_instance_id, mig.compute_instance_id]
                families["clary_gpu_mig_info"].add_metric([*ids, mig.profile, mig.uuid], 1)
                if mig.memory is not None:
                    families["clary_gpu_mig_memory_used_bytes"].add_metric(ids, float(mig.memory.used))
                    families["clary_gpu_mig_memory_total_bytes"].add_metric(ids, float(mig.memory.total))
        return [family for family in families.values() if family.samples]


def _no_gpu() -> list[Metric]:
    """What a host without a GPU reports: zero devices, and nothing per device."""
    devices = new_family(DEVICES)
    devices.add_metric([], 0)
    return [devices]


def _optional(nvml: Any, call: Callable[..., Any], *args: Any) -> str:
    """A text reading for an info label: ``unknown`` where the device lacks it."""
    try:
        return text(call(*args))
    except Exception as exc:
        if unsupported(nvml, exc):
            return "unknown"
        raise


def _import_pynvml() -> ModuleType:
    return importlib.import_module("pynvml")


def _is_absent_code(nvml: Any, exc: BaseException) -> bool:
    return code(exc) in (nvml.NVML_ERROR_LIBRARY_NOT_FOUND, nvml.NVML_ERROR_DRIVER_NOT_LOADED)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
