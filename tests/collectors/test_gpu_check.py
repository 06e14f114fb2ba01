"""benchmarks/gpu_check.py, the real-GPU check, run here against the fake NVML.

On a GPU machine it compares the collector with the device; here it must
pass on a faithful collector, catch a unit mistake or a dropped reading,
compare with nvidia-smi, and say "no NVIDIA GPU/driver" cleanly.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from benchmarks import gpu_check
from exporter.collectors import gpu as gpu_module
from tests.collectors.fake_nvml import FakeNvml
from tests.collectors.test_gpu_readings import full_gpu, mig_gpu
from tests.support import ROOT


def check(capsys, nvml, *argv: str) -> tuple[int, str]:
    code = gpu_check.main(["--nvidia-smi", "", *argv], nvml=nvml)
    return code, capsys.readouterr().out


def test_a_faithful_collector_passes(capsys):
    nvml = FakeNvml([full_gpu(), mig_gpu()])
    code, out = check(capsys, nvml)
    assert code == 0, out
    assert "collector: up 1.0, errors 0.0, clary_gpu_devices 2.0, took " in out
    assert 'OK                                 clary_gpu_sm_clock_hertz{gpu="0",uuid="GPU-full"} = 1.98e+09' \
        '  <- clock SM MHz: 1.98e+09 .. 1.98e+09' in out
    assert 'OK (not supported)                 clary_gpu_memory_temperature_celsius{gpu="1",uuid="GPU-mig"}' in out
    assert 'clary_gpu_mig_memory_total_bytes{compute_instance_id="0",gpu="1",gpu_instance_id="2",uuid="GPU-mig"}' in out
    assert "SKIPPED nvidia-smi: not found" in out
    assert out.rstrip().endswith(", 0 mismatches")
    assert nvml.initialised is False  # the collector and the oracle both shut NVML down


def test_a_unit_mistake_is_a_mismatch(capsys, monkeypatch):
    monkeypatch.setattr("exporter.collectors._nvml.MHZ", 1e3)  # kHz where Hz are due
    code, out = check(capsys, FakeNvml([full_gpu()]))
    assert code == 1
    assert 'MISMATCH                           clary_gpu_sm_clock_hertz{gpu="0",uuid="GPU-full"} = 1.98e+06' in out
    assert 'MISMATCH                           clary_gpu_memory_clock_hertz{gpu="0",uuid="GPU-full"} = 2.619e+06' in out
    assert out.rstrip().endswith(", 2 mismatches")  # SM and memory clocks


def test_a_reading_the_collector_drops_is_missing(capsys, monkeypatch):
    real = gpu_module.read_device
    monkeypatch.setattr(gpu_module, "read_device", lambda nvml, handle: [
        sample for sample in real(nvml, handle) if sample[0] != "clary_gpu_energy_joules_total"])
    code, out = check(capsys, FakeNvml([full_gpu()]))
    assert code == 1
    assert 'MISSING                            clary_gpu_energy_joules_total{gpu="0",uuid="GPU-full"}' \
        '  <- energy mJ: 987654.321' in out


def test_a_sample_nvml_does_not_support_is_unexpected(capsys, monkeypatch):
    nvml = FakeNvml([full_gpu()])
    nvml.device_errors[(0, "decoder")] = nvml.NVML_ERROR_NOT_SUPPORTED
    real = gpu_module.read_device
    monkeypatch.setattr(gpu_module, "read_device", lambda n, h: [
        *real(n, h), ("clary_gpu_decoder_utilization_ratio", (), 0.0)])
    code, out = check(capsys, nvml)
    assert code == 1
    assert "UNEXPECTED (decoder %)" in out


def fake_smi(tmp_path, rows: str) -> str:
    script = tmp_path / "nvidia-smi"
    script.write_text(f"#!/bin/sh\ncase \"$*\" in *noheader*) printf '%s\\n' '{rows}';; "
                      f"*) echo 'index, uuid, name'; printf '%s\\n' '{rows}';; esac\n")
    script.chmod(0o755)
    return str(script)


@pytest.mark.parametrize("name, expected", [("NVIDIA H100 80GB HBM3", 0), ("NVIDIA A100", 1)])
def test_nvidia_smi_is_printed_and_compared(capsys, tmp_path, name, expected):
    rows = f"0, GPU-full, {name}, 550.54.15, 81920, 55, 124.10, 1980, 2619, 37"
    code = gpu_check.main(["--nvidia-smi", fake_smi(tmp_path, rows)], nvml=FakeNvml([full_gpu()]))
    out = capsys.readouterr().out
    assert code == expected, out
    assert "index, uuid, name" in out  # the CSV as nvidia-smi prints it
    assert "OK                                 nvidia-smi gpu 0 memory.total MiB = 81920" in out
    assert "OK                                 nvidia-smi gpu 0 clocks.sm MHz = 1980" in out
    verdict = "OK" if expected == 0 else "MISMATCH"
    assert f"{verdict:<34} nvidia-smi gpu 0 name = {name}, collected NVIDIA H100 80GB HBM3" in out


def test_no_gpu_is_said_plainly(capsys):
    nvml = FakeNvml([full_gpu()])
    nvml.init_error = nvml.NVML_ERROR_DRIVER_NOT_LOADED
    code, out = check(capsys, nvml)
    assert code == 0
    assert "no NVIDIA GPU/driver here (no NVML library or driver; clary_gpu_devices 0)" in out
    assert check(capsys, nvml, "--require-gpu")[0] == 2


def test_a_failing_collector_fails_the_check(capsys):
    nvml = FakeNvml([full_gpu()])
    nvml.count_error = nvml.NVML_ERROR_UNKNOWN
    code, out = check(capsys, nvml)  # the check's own NVML reading fails first: one line, exit 1
    assert code == 1
    assert out.strip() == "FAIL: NVML itself fails here (NVMLError_Unknown: 999); see nvidia-smi and dmesg"
    nvml = FakeNvml([full_gpu()])
    real = gpu_module.read_device

    def lost(n, h):
        raise n.NVMLError(n.NVML_ERROR_GPU_IS_LOST)

    gpu_module.read_device = lost
    try:
        code, out = check(capsys, nvml)
    finally:
        gpu_module.read_device = real
    assert code == 1
    assert "collector: up 0.0, errors 1.0, clary_gpu_devices None, took " in out and "FAIL: the GPU collector failed" in out


def test_runs_cleanly_on_this_machine():
    """No injection: the real pynvml and, where there is one, the real GPU."""
    proc = subprocess.run([sys.executable, "benchmarks/gpu_check.py"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert "no NVIDIA GPU/driver" in proc.stdout or proc.stdout.rstrip().endswith(", 0 mismatches")
