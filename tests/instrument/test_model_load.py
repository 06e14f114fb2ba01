"""The latest model load time is a gauge: loads are rare, so a quantile of the histogram's rate() is NaN minutes
after one, while dashboards must show how long the last load really took."""

from __future__ import annotations

import msgspec

from exporter.ingest.schemas import TRACK_EVERYONE as USERS
from exporter.ingest.schemas import Event, ModelLoad

LAST = "clary_model_last_load_duration_seconds"


def test_the_recorder_keeps_the_latest_load_time(rec, registry):
    rec.model_loaded("layout-base", 12.5, 2e9)
    rec.model_loaded("layout-base", 3.25)
    rec.model_loaded("ocr-fast", 0.0)
    assert registry.get_sample_value(LAST, {"model": "layout-base"}) == 3.25
    assert registry.get_sample_value(LAST, {"model": "ocr-fast"}) == 0.0
    assert registry.get_sample_value("clary_model_load_duration_seconds_count", {"model": "layout-base"}) == 2


def test_model_load_events_in_bulk_keep_the_last_of_each_model(rec, registry):
    events = [msgspec.convert(e, Event) for e in (
        {"type": "model_load", "model": "layout-base", "duration_seconds": 604800},  # the schema's bound
        {"type": "model_load", "model": "ner-base", "duration_seconds": 1.5},
        {"type": "model_load", "model": "layout-base", "duration_seconds": 40},
    )]
    batch = rec.batch()
    ModelLoad.record_all(events, batch, USERS)
    batch.commit()
    assert registry.get_sample_value(LAST, {"model": "layout-base"}) == 40
    assert registry.get_sample_value(LAST, {"model": "ner-base"}) == 1.5
