"""License series go stale: a license not reported for ``license_stale_after`` seconds leaves the exposition,
so the alerts on a customer who left (expired, over its limit) resolve by themselves."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from exporter import config as config_module
from exporter.cli import _flags, build_parser
from exporter.instrument.hashing import Hasher
from exporter.instrument.recorder import Recorder
from exporter.instrument.stale import DEFAULT_LICENSE_STALE_AFTER, LICENSE_FAMILIES
from tests.instrument.recorder_helpers import SECRET, Clock

DAY = 86400.0
EXPIRY = "clary_license_expiry_timestamp_seconds"


def _recorder(clock: Clock, after: float | None = DAY) -> tuple[CollectorRegistry, Recorder]:
    registry = CollectorRegistry()
    return registry, Recorder(registry, Hasher(SECRET), clock=clock, license_stale_after=after)


def _license_samples(registry: CollectorRegistry) -> dict[tuple[str, str, str], float]:
    """(family, license, limit) -> value for every license series a scrape shows."""
    out = {}
    for family in registry.collect():
        if family.name in LICENSE_FAMILIES:
            for s in family.samples:
                out[s.name, s.labels["license"], s.labels.get("limit", "")] = s.value
    return out


def _status(rec, key: str, expires_at: float = 2e9) -> str:
    return rec.license_status("lite", key, expires_at, {"documents": 5}, {"documents": 10})


def test_the_default_is_a_day_and_the_recorder_uses_it(clock):
    assert DEFAULT_LICENSE_STALE_AFTER == DAY
    registry = CollectorRegistry()
    rec = Recorder(registry, Hasher(SECRET), clock=clock)
    lic = _status(rec, "key-a")
    clock.now += DAY - 1
    assert (EXPIRY, lic, "") in _license_samples(registry)
    clock.now += 1
    assert _license_samples(registry) == {}


def test_a_silent_license_goes_and_a_reporting_one_stays(clock):
    registry, rec = _recorder(clock)
    gone, kept = _status(rec, "departed-customer"), _status(rec, "loyal-customer")
    assert {lic for _, lic, _ in _license_samples(registry)} == {gone, kept}
    clock.now += DAY / 2
    _status(rec, "loyal-customer", expires_at=3e9)
    clock.now += DAY / 2
    samples = _license_samples(registry)
    assert samples == {
        (EXPIRY, kept, ""): 3e9,
        ("clary_license_usage", kept, "documents"): 5,
        ("clary_license_limit", kept, "documents"): 10,
    }
    # Its places in the series budgets are free again.
    assert rec.metrics.series_of(EXPIRY, gone, "lite") is None
    assert rec.metrics.series_of("clary_license_usage", gone, "lite", "documents") is None
    assert rec.metrics.series_of(EXPIRY, kept, "lite") == (kept, "lite")


def test_a_license_that_reports_again_comes_back(clock):
    registry, rec = _recorder(clock)
    lic = _status(rec, "seasonal")
    clock.now += 2 * DAY
    assert _license_samples(registry) == {}
    rec.license_status("lite", "seasonal", 2.5e9)
    assert _license_samples(registry) == {(EXPIRY, lic, ""): 2.5e9}


def test_the_events_api_path_batches_go_stale_too(clock):
    registry, rec = _recorder(clock)
    batch = rec.batch()
    lic = _status(batch, "batched")
    batch.commit()
    assert (EXPIRY, lic, "") in _license_samples(registry)
    clock.now += DAY
    assert _license_samples(registry) == {}


def test_a_batch_that_races_a_prune_still_lands(clock):
    """The batch takes its child at _set and sets it at commit; a prune in between must not eat the value."""
    registry, rec = _recorder(clock)
    lic = _status(rec, "late-again")
    clock.now += DAY
    batch = rec.batch()
    batch.license_status("lite", "late-again", 2.2e9)  # child taken now, before the prune
    assert _license_samples(registry) == {}  # the scrape prunes the old series
    batch.commit()
    assert _license_samples(registry) == {(EXPIRY, lic, ""): 2.2e9}
    clock.now += DAY - 1
    assert _license_samples(registry) == {(EXPIRY, lic, ""): 2.2e9}  # and it counts as fresh


def test_none_keeps_them_until_restart(clock):
    registry, rec = _recorder(clock, after=None)
    lic = _status(rec, "forever")
    clock.now += 365 * DAY
    assert (EXPIRY, lic, "") in _license_samples(registry)


def test_other_gauges_never_go_stale(clock):
    registry, rec = _recorder(clock)
    rec.queue_length("ocr", 40)
    clock.now += 10 * DAY
    values = {(f.name, s.labels.get("queue")): s.value for f in registry.collect() for s in f.samples}
    assert values[("clary_queue_length", "ocr")] == 40


def test_only_gauge_series_can_be_removed(rec):
    with pytest.raises(ValueError, match="only gauge"):
        rec.metrics.remove([("clary_documents_processed_total", ("lite", "invoice", "success"))])


def test_the_setting_from_file_env_and_flag(tmp_path):
    assert config_module.Config().license_stale_after == 86400
    assert config_module.load(environ={"CLARY_LICENSE_STALE_AFTER": "3600"}).license_stale_after == 3600
    args = build_parser().parse_args(["--license-stale-after", "0"])
    assert config_module.load(_flags(args), environ={}).license_stale_after == 0
    with pytest.raises(config_module.ConfigError, match="license_stale_after"):
        config_module.load(environ={"CLARY_LICENSE_STALE_AFTER": "-1"})
