"""Timers: ``time_inference`` and ``time_document`` as sync and async context managers and decorators."""

from __future__ import annotations

import time

import pytest


def _inference_counts(registry, outcome):
    return registry.get_sample_value(
        "clary_inference_requests_total", {"tier": "lite", "model": "ner-base", "outcome": outcome}) or 0


def test_time_inference_success(registry, rec):
    with rec.time_inference("lite", "ner-base") as outcome:
        assert outcome.value == "success"
    assert _inference_counts(registry, "success") == 1
    assert _inference_counts(registry, "failure") == 0
    count = registry.get_sample_value("clary_inference_duration_seconds_count", {"tier": "lite", "model": "ner-base"})
    total = registry.get_sample_value("clary_inference_duration_seconds_sum", {"tier": "lite", "model": "ner-base"})
    assert count == 1 and 0 <= total < 1


def test_time_inference_exception_is_failure_and_reraised(registry, rec):
    with pytest.raises(TimeoutError, match="model stuck"):
        with rec.time_inference("lite", "ner-base"):
            raise TimeoutError("model stuck")
    assert _inference_counts(registry, "failure") == 1
    assert _inference_counts(registry, "success") == 0
    assert registry.get_sample_value(
        "clary_inference_duration_seconds_count", {"tier": "lite", "model": "ner-base"}) == 1


def test_time_inference_soft_failure(registry, rec):
    with rec.time_inference("lite", "ner-base") as outcome:
        outcome.fail()
    assert _inference_counts(registry, "failure") == 1
    assert _inference_counts(registry, "success") == 0


def _inference(registry, tier, model, outcome):
    return registry.get_sample_value(
        "clary_inference_requests_total", {"tier": tier, "model": model, "outcome": outcome}) or 0


async def test_time_inference_async_with_and_async_decorator(registry, rec):
    import asyncio

    async with rec.time_inference("standard", "layout-base"):
        await asyncio.sleep(0.01)

    @rec.time_inference("standard", "layout-base")
    async def infer(fail: bool) -> str:
        await asyncio.sleep(0)
        if fail:
            raise ValueError("bad page")
        return "ok"

    assert await infer(False) == "ok"
    assert await infer(False) == "ok"
    with pytest.raises(ValueError, match="bad page"):
        await infer(True)
    assert _inference(registry, "standard", "layout-base", "success") == 3
    assert _inference(registry, "standard", "layout-base", "failure") == 1
    labels = {"tier": "standard", "model": "layout-base"}
    assert registry.get_sample_value("clary_inference_duration_seconds_count", labels) == 4
    assert registry.get_sample_value("clary_inference_duration_seconds_sum", labels) >= 0.01


def test_time_inference_sync_decorator_times_each_call_separately(registry, rec, monkeypatch):
    ticks = iter([10.0, 10.5, 20.0, 22.0])
    monkeypatch.setattr(time, "perf_counter", lambda: next(ticks))

    @rec.time_inference("lite", "ocr-fast")
    def infer(x: int) -> int:
        return x * 2

    assert infer.__name__ == "infer"
    assert infer(2) == 4 and infer(3) == 6
    labels = {"tier": "lite", "model": "ocr-fast"}
    assert registry.get_sample_value("clary_inference_duration_seconds_count", labels) == 2
    assert registry.get_sample_value("clary_inference_duration_seconds_sum", labels) == 2.5
    assert registry.get_sample_value("clary_inference_duration_seconds_bucket", {**labels, "le": "0.5"}) == 1
    assert registry.get_sample_value("clary_inference_duration_seconds_bucket", {**labels, "le": "1.0"}) == 1
    assert registry.get_sample_value("clary_inference_duration_seconds_bucket", {**labels, "le": "2.5"}) == 2


def test_time_document_records_outcome_duration_and_features(registry, rec):
    with rec.time_document("professional", "pdf", features=["ocr", "redaction"]) as doc:
        doc.fail()
    with pytest.raises(KeyError):
        with rec.time_document("professional", "docx"):
            raise KeyError("missing sheet")
    with rec.time_document("professional", "pdf", features=["ocr"]):
        pass
    docs = lambda doc_type, outcome: registry.get_sample_value(  # noqa: E731
        "clary_documents_processed_total", {"tier": "professional", "doc_type": doc_type, "outcome": outcome})
    assert (docs("pdf", "failure"), docs("pdf", "success"), docs("docx", "failure")) == (1, 1, 1)
    assert registry.get_sample_value(
        "clary_feature_uses_total", {"tier": "professional", "feature": "ocr", "outcome": "failure"}) == 1
    assert registry.get_sample_value(
        "clary_feature_uses_total", {"tier": "professional", "feature": "ocr", "outcome": "success"}) == 1
    assert registry.get_sample_value(
        "clary_document_processing_duration_seconds_count", {"tier": "professional", "doc_type": "pdf"}) == 2
