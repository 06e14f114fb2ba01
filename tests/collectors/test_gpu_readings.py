"""What the GPU collector reads: dcgm-exporter's default set, units, labels, MIG, and NOT_SUPPORTED per reading.

The fake pynvml (fake_nvml.py) is checked against the real nvidia-ml-py
first; then every value is read back from the rendered exposition, the way
Prometheus sees it, and once through the exporter's own /metrics.
"""

from __future__ import annotations

import inspect

import pynvml  # the real bindings (nvidia-ml-py, a dependency): importing loads no driver
import pytest

from exporter.catalog import spec
from exporter.collectors import _nvml
from exporter.collectors.gpu import GPU_FAMILIES
from exporter.config import Config
from exporter.server.app import create_app
from tests.collectors.fake_nvml import (
    CONSTANTS,
    ERROR_CODES,
    Device,
    FakeNvml,
    Mig,
    MigHandle,
    NVMLError,
)
from tests.collectors.test_gpu import Scrape, make

A = {"gpu": "0", "uuid": "GPU-full"}
B = {"gpu": "1", "uuid": "GPU-mig"}


def full_gpu() -> Device:
    return Device(
        "GPU-full", name=b"NVIDIA H100 80GB HBM3", utilization=37, memory_copy_utilization=12,
        memory_used=1 << 30, memory_total=80 << 30, temperature=54, memory_temperature=61, power_mw=123456,
        energy_mj=987_654_321, sm_clock_mhz=1980, memory_clock_mhz=2619,
        clock_reasons=0x4 | 0x20, pcie_tx_kb=1000, pcie_rx_kb=250, pcie_replays=3, encoder=5, decoder=40,
        ecc={(0, 0): 7, (0, 1): 70, (1, 0): 1, (1, 1): 2},
        retired_pages={0: [0x1000, 0x2000], 1: [0x3000]}, retired_pending=True,
        remapped_rows=(4, 1, True, False),
    )


def mig_gpu() -> Device:
    return Device("GPU-mig", name="NVIDIA A100-SXM4-40GB", mig_mode=1, mig=[
        Mig(1, 0, "NVIDIA A100-SXM4-40GB MIG 1g.5gb", "MIG-1111", memory_used=1 << 20, memory_total=5 << 30),
        None,  # an empty slot: NVML_ERROR_NOT_FOUND
        Mig(2, 0, b"NVIDIA A100-SXM4-40GB MIG 3g.20gb", b"MIG-2222", memory_used=0, memory_total=20 << 30),
    ])


def scrape_of(*devices: Device, **fake) -> Scrape:
    nvml = FakeNvml(list(devices), **fake)
    return Scrape(make(nvml)[0])


def per_device(scrape: Scrape, labels: dict[str, str]) -> dict[tuple[str, tuple], float]:
    """The samples of one device: {(family, labels beyond gpu/uuid): value}."""
    out = {}
    for (name, items), value in scrape.samples.items():
        d = dict(items)
        if name != "clary_gpu_devices" and name.startswith("clary_gpu_") and \
                (d.get("gpu"), d.get("uuid")) == (labels["gpu"], labels["uuid"]):
            out[name, tuple(sorted((k, v) for k, v in d.items() if k not in ("gpu", "uuid")))] = value
    return out


# --- the fake against the real bindings ---------------------------------------------


def test_fake_matches_real_pynvml():
    for constant, (class_name, code) in ERROR_CODES.items():
        assert getattr(pynvml, constant) == code, constant
        real = pynvml.NVMLError(code)
        assert type(real).__name__ == class_name
        assert isinstance(real, pynvml.NVMLError) and real.value == code
    for constant, value in CONSTANTS.items():
        assert getattr(pynvml, constant) == value, constant
    calls = [name for name, _ in inspect.getmembers(FakeNvml, inspect.isfunction) if name.startswith("nvml")]
    assert len(calls) == 31
    for call in calls:
        assert callable(getattr(pynvml, call)), call


def test_reason_bits_and_field_members_match_nvml():
    for reason, bit in _nvml.CLOCK_EVENT_REASONS:
        camel = "".join(word.capitalize() for word in reason.split("_"))  # sw_power_cap -> SwPowerCap
        assert getattr(pynvml, f"nvmlClocksEventReason{camel}") == bit, reason
    assert _nvml.ALL_REASONS == pynvml.nvmlClocksEventReasonAll
    members = {name for name, _ in pynvml.c_nvmlValue_t._fields_}
    by_type = {"DOUBLE": "dVal", "UNSIGNED_INT": "uiVal", "UNSIGNED_LONG": "ulVal",
               "UNSIGNED_LONG_LONG": "ullVal", "SIGNED_LONG_LONG": "sllVal", "SIGNED_INT": "siVal",
               "UNSIGNED_SHORT": "usVal"}
    for type_name, member in by_type.items():
        assert _nvml._FIELD_MEMBERS[getattr(pynvml, f"NVML_VALUE_TYPE_{type_name}")] == member
        assert member in members


def test_reason_names_are_the_catalog_allow_list():
    labels = {label.name: label for label in spec("clary_gpu_clock_event_reason_active").labels}
    assert labels["reason"].values == tuple(name for name, _ in _nvml.CLOCK_EVENT_REASONS)


# --- values and units ---------------------------------------------------------------


def test_every_reading_in_base_units():
    scrape = scrape_of(full_gpu())
    assert (scrape.up, scrape.errors) == (1.0, 0.0)
    get = scrape.get
    assert get("clary_gpu_info", **A, model_name="NVIDIA H100 80GB HBM3", driver_version="550.54.15") == 1.0
    assert get("clary_gpu_utilization_ratio", **A) == 0.37
    assert get("clary_gpu_memory_copy_utilization_ratio", **A) == 0.12
    assert get("clary_gpu_memory_used_bytes", **A) == float(1 << 30)
    assert get("clary_gpu_memory_total_bytes", **A) == float(80 << 30)
    assert get("clary_gpu_temperature_celsius", **A) == 54.0
    assert get("clary_gpu_memory_temperature_celsius", **A) == 61.0
    assert get("clary_gpu_power_watts", **A) == 123.456
    assert get("clary_gpu_energy_joules_total", **A) == 987_654.321  # mJ -> J
    assert get("clary_gpu_sm_clock_hertz", **A) == 1.98e9  # MHz -> Hz
    assert get("clary_gpu_memory_clock_hertz", **A) == 2.619e9
    assert get("clary_gpu_pcie_transmitted_bytes_per_second", **A) == 1000 * 1024.0  # KB/s -> B/s
    assert get("clary_gpu_pcie_received_bytes_per_second", **A) == 250 * 1024.0
    assert get("clary_gpu_pcie_replays_total", **A) == 3.0
    assert get("clary_gpu_encoder_utilization_ratio", **A) == 0.05
    assert get("clary_gpu_decoder_utilization_ratio", **A) == 0.40
    ecc = {(e, s): get("clary_gpu_ecc_errors_total", **A, error=e, scope=s)
           for e in ("corrected", "uncorrected") for s in ("volatile", "aggregate")}
    assert ecc == {("corrected", "volatile"): 7.0, ("corrected", "aggregate"): 70.0,
                   ("uncorrected", "volatile"): 1.0, ("uncorrected", "aggregate"): 2.0}
    assert get("clary_gpu_retired_pages", **A, error="corrected") == 2.0
    assert get("clary_gpu_retired_pages", **A, error="uncorrected") == 1.0
    assert get("clary_gpu_retired_pages_pending", **A) == 1.0
    assert get("clary_gpu_remapped_rows", **A, error="corrected") == 4.0
    assert get("clary_gpu_remapped_rows", **A, error="uncorrected") == 1.0
    assert get("clary_gpu_row_remap_pending", **A) == 1.0
    assert get("clary_gpu_row_remap_failed", **A) == 0.0
    assert "# TYPE clary_gpu_energy_joules_total counter" in scrape.text
    assert "# TYPE clary_gpu_ecc_errors_total counter" in scrape.text
    assert 'clary_gpu_sm_clock_hertz{gpu="0",uuid="GPU-full"} 1.98e+09' in scrape.text


def test_clock_event_reasons_decoded_one_gauge_per_reason():
    scrape = scrape_of(full_gpu())  # sw_power_cap (0x4) and sw_thermal_slowdown (0x20) active
    reasons = {dict(labels)["reason"]: value for (name, labels), value in scrape.samples.items()
               if name == "clary_gpu_clock_event_reason_active"}
    assert reasons == {name: (1.0 if name in ("sw_power_cap", "sw_thermal_slowdown") else 0.0)
                       for name, _ in _nvml.CLOCK_EVENT_REASONS}


def test_only_supported_reasons_are_reported():
    device = full_gpu()
    device.supported_clock_reasons = 0x1 | 0x4 | 0x40
    scrape = scrape_of(device)
    reasons = {dict(labels)["reason"]: value for (name, labels), value in scrape.samples.items()
               if name == "clary_gpu_clock_event_reason_active"}
    assert reasons == {"gpu_idle": 0.0, "sw_power_cap": 1.0, "hw_thermal_slowdown": 0.0}


def test_supported_reasons_unknown_reports_all_nine():
    nvml = FakeNvml([full_gpu()])
    nvml.device_errors[(0, "supported_clock_reasons")] = nvml.NVML_ERROR_NOT_SUPPORTED
    scrape = Scrape(make(nvml)[0])
    assert sum(1 for name, _ in scrape.samples if name == "clary_gpu_clock_event_reason_active") == 9


@pytest.mark.parametrize("missing", ["attribute", "driver"])
def test_older_bindings_or_driver_fall_back_to_throttle_reasons(missing):
    """Bindings without the 535 names, or a driver without the function: the old call answers."""
    nvml = FakeNvml([full_gpu()])
    if missing == "attribute":
        nvml.nvmlDeviceGetCurrentClocksEventReasons = None
    else:
        def not_found(handle):
            raise NVMLError(nvml.NVML_ERROR_FUNCTION_NOT_FOUND)
        nvml.nvmlDeviceGetCurrentClocksEventReasons = not_found
    nvml.nvmlDeviceGetCurrentClocksThrottleReasons = lambda handle: 0x40
    scrape = Scrape(make(nvml)[0])
    assert scrape.get("clary_gpu_clock_event_reason_active", **A, reason="hw_thermal_slowdown") == 1.0
    assert scrape.get("clary_gpu_clock_event_reason_active", **A, reason="sw_power_cap") == 0.0


def test_memory_temperature_as_a_double_field():
    device = full_gpu()
    device.memory_temperature = 72.5
    assert scrape_of(device).get("clary_gpu_memory_temperature_celsius", **A) == 72.5


def test_model_name_unknown_where_nvml_has_none():
    nvml = FakeNvml([full_gpu()], driver_version=b"535.161.08")
    nvml.device_errors[(0, "name")] = nvml.NVML_ERROR_NOT_SUPPORTED
    scrape = Scrape(make(nvml)[0])
    assert scrape.get("clary_gpu_info", **A, model_name="unknown", driver_version="535.161.08") == 1.0


# --- NOT_SUPPORTED drops one reading of one device ------------------------------------------

DROPPED = {
    "utilization": {"clary_gpu_utilization_ratio", "clary_gpu_memory_copy_utilization_ratio"},
    "memory": {"clary_gpu_memory_used_bytes", "clary_gpu_memory_total_bytes"},
    "temperature": {"clary_gpu_temperature_celsius"},
    "field_values": {"clary_gpu_memory_temperature_celsius"},
    "power": {"clary_gpu_power_watts"},
    "energy": {"clary_gpu_energy_joules_total"},
    "clock": {"clary_gpu_sm_clock_hertz", "clary_gpu_memory_clock_hertz"},
    "clock_reasons": {"clary_gpu_clock_event_reason_active"},
    "pcie_throughput": {"clary_gpu_pcie_transmitted_bytes_per_second", "clary_gpu_pcie_received_bytes_per_second"},
    "pcie_replay": {"clary_gpu_pcie_replays_total"},
    "encoder": {"clary_gpu_encoder_utilization_ratio"},
    "decoder": {"clary_gpu_decoder_utilization_ratio"},
    "ecc": {"clary_gpu_ecc_errors_total"},
    "retired_pages": {"clary_gpu_retired_pages"},
    "retired_pending": {"clary_gpu_retired_pages_pending"},
    "remapped_rows": {"clary_gpu_remapped_rows", "clary_gpu_row_remap_pending", "clary_gpu_row_remap_failed"},
}


@pytest.mark.parametrize("error", ["NVML_ERROR_NOT_SUPPORTED", "NVML_ERROR_FUNCTION_NOT_FOUND"])
@pytest.mark.parametrize("call", sorted(DROPPED))
def test_an_unsupported_call_drops_only_its_families_on_that_device(call, error):
    healthy = scrape_of(full_gpu(), full_gpu())
    nvml = FakeNvml([full_gpu(), full_gpu()])
    nvml.device_errors[(0, call)] = getattr(nvml, error)
    scrape = Scrape(make(nvml)[0])
    assert (scrape.up, scrape.errors, scrape.devices) == (1.0, 0.0, 2.0)
    before, after = per_device(healthy, A), per_device(scrape, A)
    assert {name for name, _ in set(before) - set(after)} == DROPPED[call]
    assert {key: before[key] for key in after} == after  # the rest of device 0 untouched
    assert per_device(scrape, {"gpu": "1", "uuid": "GPU-full"}) == per_device(healthy, {"gpu": "1", "uuid": "GPU-full"})


def test_the_drop_table_covers_every_per_device_reading():
    per_gpu = {name for name in GPU_FAMILIES if name not in ("clary_gpu_devices", "clary_gpu_info")
               and not name.startswith("clary_gpu_mig_")}
    assert set().union(*DROPPED.values()) == per_gpu


@pytest.mark.parametrize("call", ["ecc", "clock_reasons", "remapped_rows", "field_values", "retired_pages"])
def test_any_other_error_in_a_reading_fails_the_collector(call):
    nvml = FakeNvml([full_gpu()])
    nvml.device_errors[(0, call)] = nvml.NVML_ERROR_GPU_IS_LOST
    scrape = Scrape(make(nvml)[0])
    assert (scrape.up, scrape.errors) == (0.0, 1.0)
    assert scrape.gpu_sample_count() == 0 and scrape.devices is None  # never a partial device list


def test_a_failing_field_status_fails_the_collector():
    """nvmlDeviceGetFieldValues succeeds but the field's own status is an error."""
    nvml = FakeNvml([full_gpu()])
    real = nvml.nvmlDeviceGetFieldValues

    def lost(handle, ids):
        (field,) = real(handle, ids)
        field.nvmlReturn = nvml.NVML_ERROR_GPU_IS_LOST
        return [field]

    nvml.nvmlDeviceGetFieldValues = lost
    assert (Scrape(make(nvml)[0]).up, nvml.initialised) == (0.0, False)


# --- MIG -----------------------------------------------------------------------------------------


def test_mig_devices_get_instance_labels_and_memory():
    scrape = scrape_of(full_gpu(), mig_gpu())
    info = {dict(labels)["gpu_instance_id"]: dict(labels) for (name, labels), _ in scrape.samples.items()
            if name == "clary_gpu_mig_info"}
    assert info == {
        "1": {**B, "gpu_instance_id": "1", "compute_instance_id": "0", "mig_profile": "1g.5gb", "mig_uuid": "MIG-1111"},
        "2": {**B, "gpu_instance_id": "2", "compute_instance_id": "0", "mig_profile": "3g.20gb", "mig_uuid": "MIG-2222"},
    }
    one = {**B, "gpu_instance_id": "1", "compute_instance_id": "0"}
    two = {**B, "gpu_instance_id": "2", "compute_instance_id": "0"}
    assert scrape.get("clary_gpu_mig_memory_used_bytes", **one) == float(1 << 20)
    assert scrape.get("clary_gpu_mig_memory_total_bytes", **one) == float(5 << 30)
    assert scrape.get("clary_gpu_mig_memory_used_bytes", **two) == 0.0
    assert scrape.get("clary_gpu_mig_memory_total_bytes", **two) == float(20 << 30)
    assert scrape.get("clary_gpu_info", **B, model_name="NVIDIA A100-SXM4-40GB", driver_version="550.54.15") == 1.0
    assert not any(name.startswith("clary_gpu_mig_") and dict(labels)["gpu"] == "0"
                   for name, labels in scrape.samples)


def test_every_gpu_family_of_the_catalog_is_produced():
    scrape = scrape_of(full_gpu(), mig_gpu())
    assert {name for name, _ in scrape.samples if name.startswith("clary_gpu_")} == set(GPU_FAMILIES)


@pytest.mark.parametrize("mode", [0, None], ids=["mig-off", "no-mig"])
def test_no_mig_series_without_mig_mode(mode):
    device = mig_gpu()
    device.mig_mode = mode
    scrape = scrape_of(device)
    assert scrape.up == 1.0
    assert not any(name.startswith("clary_gpu_mig_") for name, _ in scrape.samples)
    assert "clary_gpu_mig_info" not in scrape.text  # empty families are left out, HELP included


def test_mig_memory_unsupported_keeps_the_mig_device():
    nvml = FakeNvml([mig_gpu()])
    nvml.device_errors[(MigHandle(0, 2), "memory")] = nvml.NVML_ERROR_NOT_SUPPORTED
    scrape = Scrape(make(nvml)[0])
    assert scrape.get("clary_gpu_mig_memory_total_bytes", gpu="0", uuid="GPU-mig",
                      gpu_instance_id="2", compute_instance_id="0") is None
    assert sum(1 for name, _ in scrape.samples if name == "clary_gpu_mig_info") == 2


@pytest.mark.parametrize("where", [(0, "mig_handle"), (MigHandle(0, 0), "gpu_instance_id"), (0, "mig_count")])
def test_mig_enumeration_failing_fails_the_collector(where):
    nvml = FakeNvml([mig_gpu()])
    nvml.device_errors[where] = nvml.NVML_ERROR_UNKNOWN
    assert (Scrape(make(nvml)[0]).errors, nvml.initialised) == (1.0, False)


@pytest.mark.parametrize("name, profile", [
    ("NVIDIA A100-SXM4-40GB MIG 1g.5gb", "1g.5gb"),
    ("NVIDIA H100 80GB HBM3 MIG 1c.2g.20gb", "1c.2g.20gb"),
    ("Some MIG device", "device"),
    ("NVIDIA A30", "NVIDIA A30"),  # no profile in the name: the name itself
    ("trailing MIG ", "trailing MIG "),
])
def test_mig_profile_from_the_device_name(name, profile):
    assert _nvml.mig_profile(name) == profile


# --- through the exporter's /metrics ---------------------------------------------------------------


def _app(monkeypatch, importer, data_dir):
    monkeypatch.setattr("exporter.collectors.gpu._import_pynvml", importer)
    return create_app(Config(hmac_secret="s" * 32, collectors={"system": False, "gpu": True}, data_dir=data_dir))


async def test_metrics_endpoint_serves_the_gpu_families(aiohttp_client, monkeypatch, tmp_path):
    client = await aiohttp_client(_app(monkeypatch, lambda: FakeNvml([full_gpu(), mig_gpu()]), tmp_path))
    body = await (await client.get("/metrics")).text()
    assert 'clary_exporter_collector_up{collector="gpu"} 1.0' in body
    assert "clary_gpu_devices 2.0" in body
    # (prometheus_client writes labels sorted by name)
    assert ('clary_gpu_info{driver_version="550.54.15",gpu="0",model_name="NVIDIA H100 80GB HBM3",'
            'uuid="GPU-full"} 1.0') in body
    assert 'clary_gpu_ecc_errors_total{error="uncorrected",gpu="0",scope="volatile",uuid="GPU-full"} 1.0' in body
    assert 'mig_profile="3g.20gb"' in body


async def test_metrics_endpoint_without_a_gpu(aiohttp_client, monkeypatch, tmp_path):
    def no_pynvml():
        raise ImportError("No module named 'pynvml'")

    client = await aiohttp_client(_app(monkeypatch, no_pynvml, tmp_path))
    body = await (await client.get("/metrics")).text()
    assert 'clary_exporter_collector_up{collector="gpu"} 1.0' in body
    assert "\nclary_gpu_devices 0.0\n" in body
    assert [line for line in body.splitlines() if line.startswith("clary_gpu_")] == ["clary_gpu_devices 0.0"]
