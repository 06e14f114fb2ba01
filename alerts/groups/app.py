"""clary-app: what the application does besides HTTP: documents failing, unhandled exceptions, queues backing up.

The document-success SLO (``clary-slo``) pages on a fast burn of a busy
tier; :func:`app_group`'s document alert is the per-type, low-traffic
signal next to it, as ``ClaryHttpErrorSpike`` is for availability.
"""

from __future__ import annotations

from typing import Any

from exporter.promql import agg, m, on

from ..config import Config, num, pct
from .common import RuleGroup, sum_increase_over, sum_rate_over

DOCUMENTS = m("clary_documents_processed_total")
ERRORS = m("clary_errors_total")
NEW_GROUPS = m("clary_error_groups_new_total")
REGRESSIONS = m("clary_error_group_regressions_total")
QUEUE = m("clary_queue_length")

BY_DOCUMENT = ("tier", "doc_type")


def app_group(cfg: Config) -> dict[str, Any]:
    g = RuleGroup("clary-app", cfg)
    documents = g.record("tier_doc_type:clary_documents:rate30m", sum_rate_over(DOCUMENTS, "30m", BY_DOCUMENT))
    failures, failure_ratio = g.record_share(
        "tier_doc_type:clary_document_failures:rate30m", "tier_doc_type:clary_document_failures_per_document:ratio_rate30m",
        sum_rate_over(DOCUMENTS, "30m", BY_DOCUMENT, outcome="failure"), documents)
    g.alert(
        "ClaryDocumentFailureRatioHigh",
        f"""
        {g.series(failure_ratio)} > {num(cfg.document_failure_ratio)}
        and {on(*BY_DOCUMENT)}
        {g.series(failures)} * 1800 >= {cfg.document_failure_min_failures}
        """,
        severity="warning",
        team="sre",
        for_="10m",
        summary="Tier {{ $labels.tier }} fails too many {{ $labels.doc_type }} documents.",
        description=(
            "{{ $value | humanizePercentage }} of the {{ $labels.doc_type }} documents of tier {{ $labels.tier }} failed "
            f"over the last 30m (threshold {pct(cfg.document_failure_ratio)}, at least {cfg.document_failure_min_failures} "
            "failures). One document type failing points at its parser or the model that reads it."
        ),
    )
    g.alert(
        "ClaryUnhandledExceptions",
        f"{sum_increase_over(ERRORS, '15m', ('tier', 'error_type'))} > {cfg.unhandled_exceptions_max}",
        severity="warning",
        team="sre",
        for_="5m",
        summary="Tier {{ $labels.tier }} raises unhandled {{ $labels.error_type }} exceptions.",
        description=(
            "Request handlers of tier {{ $labels.tier }} raised {{ $value | printf \"%.0f\" }} unhandled "
            f"{{{{ $labels.error_type }}}} exceptions in the last 15m (threshold {cfg.unhandled_exceptions_max}): "
            "a bug or a failing dependency; each one answered a 5xx."
        ),
    )
    # A bug customers of the top tier hit: one occurrence is enough (error groups, exporter.store.errors).
    g.alert(
        "ClaryErrorGroupNewOrRegressed",
        f"""
        {sum_increase_over(NEW_GROUPS, '15m', ('tier',), tier='professional')}
        + {sum_increase_over(REGRESSIONS, '15m', ('tier',), tier='professional')}
        > 0
        """,
        severity="warning",
        team="sre",
        for_="2m",
        summary="A new or regressed error group on a {{ $labels.tier }} tier route.",
        description=(
            "{{ $value | printf \"%.0f\" }} error groups appeared for the first time or came back after being "
            "resolved on {{ $labels.tier }} tier routes in the last 15m. GET /api/v1/errors?status=open and "
            "?status=regressed on the exporter list them, most users affected first."
        ),
    )
    # One shared queue reported by several replicas: the largest report, never the sum.
    g.alert(
        "ClaryQueueBacklog",
        f"{agg(QUEUE.sel(), QUEUE.grouping(('queue',)), op='max')} > {cfg.queue_backlog_max}",
        severity="warning",
        team="sre",
        for_="15m",
        summary="Work queue {{ $labels.queue }} is backing up.",
        description=(
            "{{ $value | printf \"%.0f\" }} jobs have been waiting in queue {{ $labels.queue }} for 15 minutes "
            f"(threshold {cfg.queue_backlog_max}): its workers are too few, stuck or failing, and documents wait."
        ),
    )
    return g.build()
