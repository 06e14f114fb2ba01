"""The metric catalog: every family the project exposes, declared once.

Dashboards, alert rules, the event schema and the docs are checked against
this module by tests, so a renamed metric breaks the build instead of a
dashboard. Nothing here touches prometheus_client; ``exporter.instrument.metrics``
turns these specs into metric objects in a registry that is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

PREFIX = "clary_"


class Kind(str, Enum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


@dataclass(frozen=True)
class LabelSpec:
    """One label and the bounded set its values come from.

    ``values`` is the allow-list (None: free-form but budgeted, such as
    ``route``). ``fallback`` is what an out-of-set value becomes; None means
    such a value is rejected outright. ``configurable`` allow-lists may be
    replaced from the config file.
    """

    name: str
    values: tuple[str, ...] | None = None
    fallback: str | None = None
    configurable: bool = False
    doc: str = ""

    @property
    def fixed(self) -> bool:
        """A label whose every value is known up front (children pre-created)."""
        return self.values is not None and not self.configurable


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: Kind
    help: str
    labels: tuple[LabelSpec, ...] = ()
    buckets: tuple[float, ...] | None = None
    budget: int = 2000
    group: str = ""
    # Families produced at scrape time by a custom collector, not by
    # prometheus_client metric objects owned by the recorder.
    collected: bool = False
    prefill: bool = field(default=False)

    @property
    def label_names(self) -> tuple[str, ...]:
        return tuple(label.name for label in self.labels)

    @property
    def exposed_names(self) -> tuple[str, ...]:
        """Sample names as they appear in the text exposition."""
        if self.kind is Kind.HISTOGRAM:
            return (f"{self.name}_bucket", f"{self.name}_sum", f"{self.name}_count")
        return (self.name,)


# --- label sets -----------------------------------------------------------

TIERS = ("lite", "standard", "professional")
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

TIER = LabelSpec("tier", TIERS, "unknown", doc="customer tier, from the API key")
METHOD = LabelSpec("method", METHODS, "other")
ROUTE = LabelSpec("route", None, "unmatched", doc="router template, never the raw path")
CODE = LabelSpec("code", None, None, doc="HTTP status code 100..599")
OUTCOME = LabelSpec("outcome", ("success", "failure"), None)
DOC_TYPE = LabelSpec(
    "doc_type",
    ("pdf", "docx", "xlsx", "image", "email", "html", "text"),
    "other",
    configurable=True,
)
FEATURE = LabelSpec(
    "feature",
    (
        "ocr",
        "table_extraction",
        "classification",
        "entity_extraction",
        "summarization",
        "translation",
        "redaction",
        "handwriting",
        "signature_detection",
        "custom_templates",
        "batch_processing",
        "llm_extraction",
        "sso",
        "audit_log",
    ),
    "other",
    configurable=True,
)
MODEL = LabelSpec(
    "model",
    (
        "layout-small",
        "layout-base",
        "ocr-fast",
        "ocr-accurate",
        "classifier-v2",
        "ner-base",
        "gpt-4o",
        "gpt-4o-mini",
        "claude-sonnet",
        "claude-haiku",
        "gemini-pro",
    ),
    "other",
    configurable=True,
)
PROVIDER = LabelSpec(
    "provider",
    ("openai", "anthropic", "azure_openai", "google", "bedrock"),
    "other",
    configurable=True,
)
ACTION = LabelSpec(
    "action",
    ("login", "logout", "upload", "download", "view", "search", "export", "share", "delete", "annotate"),
    "other",
    configurable=True,
)
FROM_ACTION, TO_ACTION = (LabelSpec(n, None, "other", doc="allowed action, or start/end") for n in ("from_action", "to_action"))
FUNNEL = LabelSpec("funnel", None, "other", doc="funnel name from the config's funnels (20 at most)")
FUNNEL_STEP = LabelSpec("step", tuple(map(str, range(1, 11))), None, doc="1-based step of the funnel")
ERROR_TYPE = LabelSpec(
    "error_type",
    (
        "ValueError",
        "KeyError",
        "TypeError",
        "RuntimeError",
        "TimeoutError",
        "ConnectionError",
        "PermissionError",
        "FileNotFoundError",
        "MemoryError",
        "OSError",
        "NotImplementedError",
    ),
    "other",
    configurable=True,
)
ERROR_GROUP = LabelSpec("group", None, None, doc="error group fingerprint; the 10 with the most users per tier")
LIMIT = LabelSpec("limit", ("documents", "features", "api_calls"), "other", configurable=True)
QUEUE = LabelSpec("queue", ("ingest", "ocr", "inference", "llm", "export"), "other", configurable=True)
LICENSE_RESULT = LabelSpec("result", ("valid", "invalid", "expired", "revoked", "error"), "error")
FEEDBACK_TYPE = LabelSpec("type", ("bug", "feature_request", "general", "survey"), None)
SUPPRESS_REASON = LabelSpec("reason", ("duplicate", "rate_limited"), None,
                            doc="why an urgent notification was not sent (exporter.api.limits)")
LICENSE_ID = LabelSpec("license", None, None, doc="first 12 hex chars of HMAC-SHA256(secret, key)")
TEMPLATE_KIND = LabelSpec("kind", ("builtin", "custom"), None)
DIRECTION = LabelSpec("direction", ("input", "output"), None)
WINDOW = LabelSpec("window", ("5m", "1h", "24h"), None)
INTERFACE = LabelSpec("interface", None, None, doc="network interface, loopback excluded, count bounded")
GPU_INDEX = LabelSpec("gpu", None, None, doc="NVML device index")
GPU_UUID = LabelSpec("uuid", None, None, doc="NVML device UUID")
GPU = (GPU_INDEX, GPU_UUID)
GPU_MODEL = LabelSpec("model_name", None, None, doc="NVML product name; a host has few devices")
DRIVER_VERSION = LabelSpec("driver_version", None, None, doc="NVIDIA driver version")
# NVML's clock event (formerly throttle) reason bits, by name; the collector decodes the bitmask.
CLOCK_EVENT_REASON = LabelSpec(
    "reason",
    ("gpu_idle", "applications_clocks_setting", "sw_power_cap", "hw_slowdown", "sync_boost",
     "sw_thermal_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown", "display_clock_setting"),
    None,
)
ECC_ERROR = LabelSpec("error", ("corrected", "uncorrected"), None, doc="single-bit (corrected) or double-bit")
ECC_SCOPE = LabelSpec("scope", ("volatile", "aggregate"), None, doc="since the driver loaded, or lifetime")
GPU_INSTANCE = LabelSpec("gpu_instance_id", None, None, doc="MIG GPU instance id (at most 7 per GPU)")
COMPUTE_INSTANCE = LabelSpec("compute_instance_id", None, None, doc="MIG compute instance id")
MIG = (*GPU, GPU_INSTANCE, COMPUTE_INSTANCE)
MIG_PROFILE = LabelSpec("mig_profile", None, None, doc="MIG profile, e.g. 1g.10gb")
MIG_UUID = LabelSpec("mig_uuid", None, None, doc="MIG device UUID (what CUDA_VISIBLE_DEVICES names)")
COLLECTOR = LabelSpec("collector", None, None, doc="scrape-time collector name")
EVENT_TYPE = LabelSpec(
    "type",
    (
        "document_processed",
        "feature_used",
        "feature_blocked",
        "quota_exceeded",
        "template_used",
        "api_call",
        "inference",
        "model_load",
        "queue_length",
        "llm_call",
        "license_validation",
        "license_status",
        "user_action",
        "session",
        "feedback",
        "error",
    ),
    "other",
)
EVENT_OUTCOME = LabelSpec("outcome", ("accepted", "rejected"), None)
OVERFLOW_METRIC = LabelSpec("metric", None, None, doc="catalog metric name")
OVERFLOW_LABEL = LabelSpec("label", None, None, doc="label name of that metric")
VERSION = LabelSpec("version", None, None)
CLOSE_REASON = LabelSpec("reason", ("header_timeout", "body_timeout", "idle", "limit"), None,
                         doc="why the exporter closed a client connection")
STORAGE_OPERATION = LabelSpec(
    "operation", ("check", "feedback", "activity", "privacy", "retention", "outbox", "other"), "other",
    doc="what a storage failure affected; check: the start-up check and the periodic probe")

# --- buckets --------------------------------------------------------------

HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)
DOCUMENT_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
FEATURES_PER_DOC_BUCKETS = (1, 2, 3, 5, 8, 13, 21)
INFERENCE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
MODEL_LOAD_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
LLM_BUCKETS = (0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120)
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 10)
LICENSE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
RATING_BUCKETS = (1, 2, 3, 4, 5)
SESSION_BUCKETS = (30, 60, 300, 600, 1800, 3600, 7200, 14400, 28800)
# VADER compound scores, -1..1; -0.05 and 0.05 are its negative/positive cut-offs (share negative = le="-0.05").
SENTIMENT_BUCKETS = (-0.75, -0.5, -0.25, -0.05, 0.05, 0.25, 0.5, 0.75, 1)


def _c(name, help_, labels=(), **kw) -> MetricSpec:
    return MetricSpec(name, Kind.COUNTER, help_, tuple(labels), **kw)


def _g(name, help_, labels=(), **kw) -> MetricSpec:
    return MetricSpec(name, Kind.GAUGE, help_, tuple(labels), **kw)


def _h(name, help_, labels, buckets, **kw) -> MetricSpec:
    return MetricSpec(name, Kind.HISTOGRAM, help_, tuple(labels), buckets=buckets, **kw)


def _gpu(make, name, help_, labels=()) -> MetricSpec:
    """A per-device family of the GPU collector: labelled gpu and uuid first."""
    return make(name, help_, (*GPU, *labels), group="gpu", collected=True)


CATALOG: tuple[MetricSpec, ...] = (
    # API usage
    _c("clary_http_requests_total", "HTTP requests served, by route template and status code.",
       (TIER, METHOD, ROUTE, CODE), group="api"),
    _h("clary_http_request_duration_seconds", "HTTP request latency from request start to response end.",
       (TIER, METHOD, ROUTE), HTTP_BUCKETS, group="api"),
    _g("clary_http_requests_in_flight", "HTTP requests currently being served.", group="api"),
    _c("clary_errors_total", "Unhandled exceptions raised by request handlers.",
       (TIER, ERROR_TYPE, ROUTE), group="api"),
    _g("clary_error_groups_open", "Error groups open or regressed, by tier.", (TIER,), group="api", collected=True),
    _c("clary_error_groups_new_total", "Error groups seen a first time, by tier.", (TIER,), group="api", collected=True),
    _c("clary_error_group_regressions_total", "Resolved error groups seen again, by tier.", (TIER,), group="api",
       collected=True),
    _g("clary_error_group_users", "Distinct users affected by the 10 error groups with the most users, per tier.",
       (TIER, ERROR_GROUP), group="api", collected=True),
    # Documents and features
    _c("clary_documents_processed_total", "Documents processed, by type and outcome.",
       (TIER, DOC_TYPE, OUTCOME), group="documents", prefill=True),
    _h("clary_document_processing_duration_seconds", "Wall time to process one document.",
       (TIER, DOC_TYPE), DOCUMENT_BUCKETS, group="documents"),
    _c("clary_feature_uses_total", "Feature invocations, by feature and outcome.",
       (TIER, FEATURE, OUTCOME), group="documents", prefill=True),
    _h("clary_features_per_document", "Number of features applied to one document.",
       (TIER,), FEATURES_PER_DOC_BUCKETS, group="documents", prefill=True),
    _c("clary_feature_blocked_total", "Feature requests refused because the caller's tier lacks them (upgrade potential).",
       (TIER, FEATURE), group="documents"),
    _c("clary_quota_exceeded_total", "Requests refused because a tier quota was exhausted.",
       (TIER, LIMIT), group="documents", prefill=True),
    _c("clary_template_uses_total", "Extraction template uses, built-in or custom.",
       (TIER, TEMPLATE_KIND), group="documents", prefill=True),
    # Models and inference
    _c("clary_inference_requests_total", "Model inference requests, by model and outcome.",
       (TIER, MODEL, OUTCOME), group="inference", prefill=True),
    _h("clary_inference_duration_seconds", "Model inference latency.",
       (TIER, MODEL), INFERENCE_BUCKETS, group="inference"),
    _h("clary_model_load_duration_seconds", "Time to load a model into memory.",
       (MODEL,), MODEL_LOAD_BUCKETS, group="inference"),
    _g("clary_model_memory_bytes", "Memory held by a loaded model.", (MODEL,), group="inference"),
    _g("clary_model_last_load_duration_seconds", "How long the most recent load of a model took.",
       (MODEL,), group="inference"),
    _g("clary_queue_length", "Jobs waiting in a work queue.", (QUEUE,), group="inference"),
    # Cloud LLM
    _c("clary_llm_requests_total", "Cloud LLM requests, by provider, model and outcome.",
       (TIER, PROVIDER, MODEL, OUTCOME), group="llm"),
    _h("clary_llm_request_duration_seconds", "Cloud LLM request latency, first byte sent to last token received.",
       (PROVIDER, MODEL), LLM_BUCKETS, group="llm"),
    _h("clary_llm_time_to_first_token_seconds", "Cloud LLM latency to the first streamed token.",
       (PROVIDER, MODEL), TTFT_BUCKETS, group="llm"),
    _c("clary_llm_tokens_total", "Cloud LLM tokens, input (prompt) and output (completion).",
       (TIER, PROVIDER, MODEL, DIRECTION), group="llm"),
    # License
    _c("clary_license_validations_total", "License validations, by result.",
       (TIER, LICENSE_RESULT), group="license", prefill=True),
    _h("clary_license_validation_duration_seconds", "License validation latency.",
       (), LICENSE_BUCKETS, group="license"),
    _g("clary_license_expiry_timestamp_seconds", "Unix time at which a license expires.",
       (LICENSE_ID, TIER), group="license", budget=500),
    _g("clary_license_usage", "Current usage counted against a license limit.",
       (LICENSE_ID, TIER, LIMIT), group="license", budget=1500),
    _g("clary_license_limit", "The limit a license grants (compliance = usage / limit).",
       (LICENSE_ID, TIER, LIMIT), group="license", budget=1500),
    _g("clary_licenses_active", "Distinct licenses validated in the last 24 hours.",
       (TIER,), group="license", collected=True),
    # Feedback
    _c("clary_feedback_submissions_total", "Feedback submissions, by type.",
       (TIER, FEEDBACK_TYPE), group="feedback", prefill=True),
    _h("clary_feedback_rating", "Ratings (1..5) given with feedback.",
       (TIER, FEEDBACK_TYPE), RATING_BUCKETS, group="feedback", prefill=True),
    _c("clary_feedback_urgent_total", "Urgent feedback: bug reports rated 2 or lower.",
       (TIER,), group="feedback", prefill=True),
    _c("clary_feedback_notifications_suppressed_total",
       "Urgent feedback stored but not sent to the webhooks: a duplicate, or over the tier's notification limit.",
       (TIER, SUPPRESS_REASON), group="feedback", prefill=True),
    _c("clary_feedback_rate_limited_total", "Feedback submissions refused with 429: the API key was over its rate.",
       (TIER,), group="feedback", prefill=True),
    _h("clary_feedback_sentiment",
       "Sentiment of feedback texts: VADER compound score, -1 (negative) to 1; <= -0.05 negative, >= 0.05 positive.",
       (TIER, FEEDBACK_TYPE), SENTIMENT_BUCKETS, group="feedback", prefill=True),
    _c("clary_feedback_feature_submissions_total", "Feedback submissions that name a feature, by feature and type.",
       (TIER, FEATURE, FEEDBACK_TYPE), group="feedback", prefill=True),
    _c("clary_feedback_feature_low_ratings_total", "Feedback naming a feature rated 2 or lower.",
       (TIER, FEATURE), group="feedback", prefill=True),
    _c("clary_feedback_feature_negative_total", "Feedback naming a feature whose text is negative (sentiment <= -0.05).",
       (TIER, FEATURE), group="feedback", prefill=True),
    # User activity
    _g("clary_active_users", "Distinct users seen in the window (HyperLogLog estimate over hashed ids).",
       (TIER, WINDOW), group="users", collected=True),
    _h("clary_session_duration_seconds", "Length of finished user sessions.",
       (TIER,), SESSION_BUCKETS, group="users", prefill=True),
    _c("clary_user_actions_total", "User actions, by action.", (TIER, ACTION), group="users"),
    _c("clary_workflow_transitions_total", "Action-to-action moves within user sessions (start: first action, "
       "end: session ended or idle past its timeout).", (TIER, FROM_ACTION, TO_ACTION), group="users"),
    _c("clary_funnel_sessions_total", "Sessions reaching a funnel's step, its steps in order (each session once per "
       "step).", (TIER, FUNNEL, FUNNEL_STEP, ACTION), group="users", budget=1000),
    _c("clary_workflow_sessions_evicted_total", "Live sessions evicted past workflow_max_sessions (counted as ended).", (TIER,), group="users", prefill=True),
    # System and GPU (scrape-time collectors)
    _g("clary_system_cpu_usage_ratio", "CPU busy ratio (0..1) across all cores since the previous scrape.",
       group="system", collected=True),
    _g("clary_system_memory_used_bytes", "Memory in use (total minus available).", group="system", collected=True),
    _g("clary_system_memory_total_bytes", "Physical memory installed.", group="system", collected=True),
    _c("clary_system_disk_read_bytes_total", "Bytes read from all block devices.", group="system", collected=True),
    _c("clary_system_disk_written_bytes_total", "Bytes written to all block devices.", group="system", collected=True),
    _c("clary_system_network_received_bytes_total", "Bytes received per network interface (loopback excluded).",
       (INTERFACE,), group="system", collected=True),
    _c("clary_system_network_transmitted_bytes_total", "Bytes sent per network interface (loopback excluded).",
       (INTERFACE,), group="system", collected=True),
    _g("clary_gpu_utilization_ratio", "GPU busy ratio (0..1) over the driver's last sample period.",
       (GPU_INDEX, GPU_UUID), group="gpu", collected=True),
    _g("clary_gpu_memory_used_bytes", "GPU framebuffer memory in use.", (GPU_INDEX, GPU_UUID), group="gpu", collected=True),
    _g("clary_gpu_memory_total_bytes", "GPU framebuffer memory installed.", (GPU_INDEX, GPU_UUID), group="gpu", collected=True),
    _g("clary_gpu_temperature_celsius", "GPU core temperature.", (GPU_INDEX, GPU_UUID), group="gpu", collected=True),
    _g("clary_gpu_power_watts", "GPU power draw.", (GPU_INDEX, GPU_UUID), group="gpu", collected=True),
    _g("clary_gpu_devices", "GPUs NVML reports on this host; 0 without a GPU, driver or pynvml.",
       group="gpu", collected=True),
    _gpu(_g, "clary_gpu_info", "GPU identity (join on gpu and uuid for the model name); always 1.",
         (GPU_MODEL, DRIVER_VERSION)),
    _gpu(_g, "clary_gpu_sm_clock_hertz", "Current SM (streaming multiprocessor) clock."),
    _gpu(_g, "clary_gpu_memory_clock_hertz", "Current memory clock."),
    _gpu(_g, "clary_gpu_clock_event_reason_active",
         "1 while the reason holds the clocks down or explains them (throttling, idle); 0 otherwise.",
         (CLOCK_EVENT_REASON,)),
    _gpu(_g, "clary_gpu_memory_copy_utilization_ratio",
         "Share (0..1) of the driver's last sample period during which device memory was read or written."),
    _gpu(_g, "clary_gpu_memory_temperature_celsius", "GPU memory (HBM) temperature."),
    _gpu(_c, "clary_gpu_energy_joules_total", "Energy the GPU consumed since the driver loaded."),
    _gpu(_g, "clary_gpu_pcie_transmitted_bytes_per_second", "PCIe throughput from the GPU, sampled by the driver."),
    _gpu(_g, "clary_gpu_pcie_received_bytes_per_second", "PCIe throughput to the GPU, sampled by the driver."),
    _gpu(_c, "clary_gpu_pcie_replays_total", "PCIe replays (link-level retries)."),
    _gpu(_g, "clary_gpu_encoder_utilization_ratio", "Video encoder busy ratio (0..1)."),
    _gpu(_g, "clary_gpu_decoder_utilization_ratio", "Video decoder busy ratio (0..1)."),
    _gpu(_c, "clary_gpu_ecc_errors_total", "GPU memory ECC errors, corrected or not.", (ECC_ERROR, ECC_SCOPE)),
    _gpu(_g, "clary_gpu_retired_pages", "Memory pages retired (pre-Ampere), after corrected or uncorrected errors.",
         (ECC_ERROR,)),
    _gpu(_g, "clary_gpu_retired_pages_pending", "1 if a page retirement waits for the next GPU reset."),
    _gpu(_g, "clary_gpu_remapped_rows", "Memory rows remapped (Ampere and later), after corrected or uncorrected errors.",
         (ECC_ERROR,)),
    _gpu(_g, "clary_gpu_row_remap_pending", "1 if a row remap waits for the next GPU reset."),
    _gpu(_g, "clary_gpu_row_remap_failed", "1 if a row remap failed: the GPU needs service."),
    _g("clary_gpu_mig_info", "MIG device identity (parent gpu, instance ids, profile); always 1.",
       (*MIG, MIG_PROFILE, MIG_UUID), group="gpu", collected=True),
    _g("clary_gpu_mig_memory_used_bytes", "Memory in use on a MIG device.", MIG, group="gpu", collected=True),
    _g("clary_gpu_mig_memory_total_bytes", "Memory of a MIG device.", MIG, group="gpu", collected=True),
    # The exporter itself
    _g("clary_exporter_collector_up", "1 if the collector's last scrape succeeded (also when it found no hardware to read), 0 if it failed.",
       (COLLECTOR,), group="exporter", collected=True),
    _c("clary_exporter_collector_errors_total", "Scrape-time collector failures.",
       (COLLECTOR,), group="exporter", collected=True),
    _g("clary_exporter_collector_duration_seconds", "Time the collector took in the last scrape.",
       (COLLECTOR,), group="exporter", collected=True),
    _c("clary_exporter_events_total", "Ingested events, accepted or rejected.",
       (EVENT_TYPE, EVENT_OUTCOME), group="exporter", prefill=True),
    _c("clary_exporter_label_overflow_total",
       "Label values replaced by 'other' (a status code by its class, '5xx') because a series budget was exhausted.",
       (OVERFLOW_METRIC, OVERFLOW_LABEL), group="exporter"),
    _g("clary_exporter_build_info", "Exporter build information; always 1.", (VERSION,), group="exporter"),
    _g("clary_exporter_connections_open", "Client connections the exporter's HTTP server holds open.",
       group="exporter", collected=True),
    _c("clary_exporter_connections_closed_total",
       "Client connections the exporter closed: too slow to send headers or body, idle too long, or over max_connections.",
       (CLOSE_REASON,), group="exporter", collected=True),
    _g("clary_exporter_storage_up", "1 if the SQLite store under --data-dir works, 0 after a failed operation until a "
       "re-check succeeds (/readyz is 503 meanwhile).", group="exporter", collected=True),
    _c("clary_exporter_storage_errors_total", "Failed storage operations (disk full, read-only, locked, file gone).",
       (STORAGE_OPERATION,), group="exporter", collected=True),
)

BY_NAME: dict[str, MetricSpec] = {spec.name: spec for spec in CATALOG}

# Families that only exist when the hardware does: without a GPU only
# clary_gpu_devices (0) is reported, no per-device series.
HARDWARE_GROUPS = frozenset({"gpu"})


def spec(name: str) -> MetricSpec:
    """Look a family up by name; a KeyError names the unknown metric."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"metric {name!r} is not in the catalog") from None


def exposed_name_index() -> dict[str, str]:
    """Map every exposed sample name (``_bucket``, ``_sum``...) to its family."""
    return {sample: s.name for s in CATALOG for sample in s.exposed_names}


def configurable_labels() -> dict[str, LabelSpec]:
    """Labels whose allow-lists the config file may replace."""
    return {
        label.name: label
        for s in CATALOG
        for label in s.labels
        if label.configurable
    }
