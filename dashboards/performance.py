"""Performance dashboard (one per tier): latency, errors, inference, hosts, GPUs.

Tier-labelled families (requests, latency, inference) are filtered on the
dashboard's tier. In-flight requests, queues, model load/memory, host, GPU
and collector metrics carry no tier label in the catalog: those panels show
the whole deployment and say so in their description.
"""

from __future__ import annotations

from dataclasses import replace

from exporter.promql import (
    RANGE,
    agg,
    hist_buckets,
    increase,
    m,
    max_gauge,
    on,
    over_time,
    quantile,
    rate,
    rate_ratio,
    regex,
    sum_gauge,
    sum_rate,
)

from . import slo_rows, thresholds, tier_rows
from .common import Built, tier_dashboard
from .gpu_row import gpu_row
from .layout import Row
from .panels import bargauge, heatmap, stat, table, timeseries
from .styling import up_down_mappings
from .targets import Q, instant, table_q

KIND = "performance"

HTTP = m("clary_http_requests_total")
LATENCY = m("clary_http_request_duration_seconds")
IN_FLIGHT = m("clary_http_requests_in_flight")
QUEUE = m("clary_queue_length")
INFERENCE = m("clary_inference_requests_total")
INFERENCE_TIME = m("clary_inference_duration_seconds")
LAST_LOAD = m("clary_model_last_load_duration_seconds")
MODEL_MEMORY = m("clary_model_memory_bytes")

CPU = m("clary_system_cpu_usage_ratio")
MEM_USED = m("clary_system_memory_used_bytes")
MEM_TOTAL = m("clary_system_memory_total_bytes")
DISK_READ = m("clary_system_disk_read_bytes_total")
DISK_WRITTEN = m("clary_system_disk_written_bytes_total")
NET_RX = m("clary_system_network_received_bytes_total")
NET_TX = m("clary_system_network_transmitted_bytes_total")

COLLECTOR_UP = m("clary_exporter_collector_up")
GPU_DEVICES = m("clary_gpu_devices")
NO_GPU = 2  # collector_state() of the gpu collector on a host without a GPU: neutral, not DOWN
COLLECTOR_ERRORS = m("clary_exporter_collector_errors_total")
COLLECTOR_DURATION = m("clary_exporter_collector_duration_seconds")
EVENTS = m("clary_exporter_events_total")
OVERFLOW = m("clary_exporter_label_overflow_total")
BUILD_INFO = m("clary_exporter_build_info")
GROUPS_OPEN = m("clary_error_groups_open")
GROUPS_NEW = m("clary_error_groups_new_total")
GROUPS_REGRESSED = m("clary_error_group_regressions_total")
GROUP_USERS = m("clary_error_group_users")

ERROR_CODES = regex("5..")
ALL_TIERS = "All tiers: this metric carries no tier label."
PER_HOST = ("instance",)


def latency_quantiles(family, by=(), legend_prefix="", **matchers) -> tuple[Q, ...]:
    """p50, p95 and p99 queries of a latency histogram."""
    suffix = " ".join("{{%s}}" % label for label in by)
    return tuple(
        Q(quantile(q, family, by, **matchers), f"{legend_prefix}p{int(q * 100)} {suffix}".strip())
        for q in (0.5, 0.95, 0.99)
    )


def requests_row(tier: str) -> Row:
    t = {"tier": tier}
    return Row(
        "Requests",
        [
            stat(
                "Request rate",
                "HTTP requests per second served to this tier.",
                "reqps",
                Q(sum_rate(HTTP, **t)),
            ),
            stat(
                "Error ratio (5xx)",
                "Share of this tier's HTTP requests answered with a 5xx status.",
                "percentunit",
                Q(rate_ratio(HTTP, {"code": ERROR_CODES}, **t)),
                thresholds=thresholds.error_ratio(tier),
                decimals=2,
            ),
            stat(
                "Latency p95",
                "95th percentile of HTTP request latency for this tier; red above the tier's threshold "
                "(ClaryHttpLatencyHigh, and the latency SLO's).",
                "s",
                Q(quantile(0.95, LATENCY, **t)),
                thresholds=thresholds.latency(tier),
            ),
            stat(
                "In-flight requests",
                "HTTP requests being served right now. " + ALL_TIERS,
                "short",
                Q(sum_gauge(IN_FLIGHT)),
            ),
            timeseries(
                "Request rate by status code",
                "HTTP requests per second for this tier, by status code (stacked).",
                "reqps",
                Q(sum_rate(HTTP, ("code",), **t), "{{code}}"),
                stack=True,
                w=8,
            ),
            timeseries(
                "Latency p50 / p95 / p99",
                "HTTP request latency quantiles from the request-duration histogram "
                "(histogram_quantile over sum by (le)).",
                "s",
                *latency_quantiles(LATENCY, **t),
                thresholds=thresholds.latency(tier),
                w=8,
            ),
            timeseries(
                "Error ratio (5xx)",
                "Share of this tier's HTTP requests answered with a 5xx status, over time.",
                "percentunit",
                Q(rate_ratio(HTTP, {"code": ERROR_CODES}, **t), "5xx ratio"),
                min_=0,
                thresholds=thresholds.error_ratio_line(tier),
                w=8,
            ),
            table(
                "Slowest routes (p95)",
                "The ten route templates with the highest 95th percentile latency right now.",
                "s",
                table_q(f"topk(10, {quantile(0.95, LATENCY, ('route',), **t)})"),
                value_column="p95 latency",
                sort_by="p95 latency",
                descending=True,
                thresholds=thresholds.latency(tier),
                w=8,
            ),
            heatmap(
                "Latency distribution",
                "HTTP requests per latency bucket over time.",
                "s",
                hist_buckets(LATENCY, **t),
                w=8,
            ),
            timeseries(
                "In-flight requests and queue length",
                "Requests being served (summed: each replica serves its own) and jobs waiting per "
                "work queue (a queue is shared state that every replica may report: the highest "
                "length reported, never a sum over replicas). " + ALL_TIERS,
                "short",
                Q(sum_gauge(IN_FLIGHT), "in flight"),
                Q(max_gauge(QUEUE, ("queue",)), "queue {{queue}}"),
                w=8,
            ),
        ],
    )


def errors_row(tier: str) -> Row:
    """Error groups (exporter.store.errors): which bugs hit the most users of this tier."""
    t = {"tier": tier}
    return Row(
        "Error groups",
        [
            table(
                "Top error groups by users affected",
                "The error groups (same exception type and innermost frames) that hit the most distinct users "
                "of this tier, from the exporter's error records (top 10 per tier). Look a group up with "
                "GET /api/v1/errors on the exporter; a customer's error id with GET /api/v1/errors/{error_id}.",
                "short",
                table_q(f"topk(10, {max_gauge(GROUP_USERS, ('group',), **t)})"),
                value_column="users affected",
                sort_by="users affected",
                descending=True,
                w=12,
            ),
            timeseries(
                "Error groups: open, new, regressed",
                "Groups of this tier not resolved (open or regressed), and groups that appeared for the first "
                "time or came back after being resolved (ClaryErrorGroupNewOrRegressed on the Professional tier).",
                "short",
                Q(max_gauge(GROUPS_OPEN, **t), "open"),
                Q(agg(increase(GROUPS_NEW.sel(**t)), GROUPS_NEW.grouping(())), "new"),
                Q(agg(increase(GROUPS_REGRESSED.sel(**t)), GROUPS_REGRESSED.grouping(())), "regressed"),
                min_=0,
                w=12,
            ),
        ],
    )


def inference_row(tier: str) -> Row:
    t = {"tier": tier}
    return Row(
        "Inference and models",
        [
            timeseries(
                "Inference rate by model",
                "Model inference requests per second for this tier, by model and outcome.",
                "ops",
                Q(sum_rate(INFERENCE, ("model", "outcome"), **t), "{{model}} {{outcome}}"),
                w=8,
            ),
            timeseries(
                "Inference time p95 by model",
                "95th percentile of model inference latency for this tier, per model.",
                "s",
                Q(quantile(0.95, INFERENCE_TIME, ("model",), **t), "{{model}}"),
                w=8,
            ),
            timeseries(
                "Inference failure ratio by model",
                "Failed inferences divided by all inferences, per model.",
                "percentunit",
                Q(rate_ratio(INFERENCE, {"outcome": "failure"}, ("model",), **t), "{{model}}"),
                min_=0,
                w=8,
            ),
            *model_load_panels(),
            timeseries(
                "Model memory by model",
                "Memory held by loaded models, summed over exporter replicas. " + ALL_TIERS,
                "bytes",
                Q(sum_gauge(MODEL_MEMORY, ("model",)), "{{model}}"),
                stack=True,
                w=12,
            ),
        ],
    )


def model_load_panels(**matchers) -> tuple:
    """How long model loads take: the latest load's true time per replica, and the slowest in the range.

    Not a quantile of the histogram's rate(): loads are rare, so minutes
    after one every bucket's rate is 0 and the quantile is empty (and a
    model loaded once, at start, never shows in the histogram's increase()).
    """
    return (
        timeseries(
            "Latest model load time",
            "How long the most recent load of each model took, per exporter replica (a step at each "
            "load). " + ALL_TIERS,
            "s",
            Q(max_gauge(LAST_LOAD, ("instance", "model"), **matchers), "{{model}} {{instance}}"),
            w=6,
        ),
        bargauge(
            "Slowest model load",
            "The longest load of each model seen in the selected time range (the latest load's time, "
            "at its highest over the range, on any replica). " + ALL_TIERS,
            "s",
            instant(agg(over_time("max", LAST_LOAD.sel(**matchers), RANGE), ("model",), op="max"), "{{model}}"),
            w=6,
        ),
    )


def system_row() -> Row:
    return Row(
        "System",
        [
            timeseries(
                "CPU usage",
                "CPU busy ratio across all cores, per exporter host. " + ALL_TIERS,
                "percentunit",
                Q(sum_gauge(CPU, PER_HOST), "{{instance}}"),
                min_=0,
                max_=1,
                w=6,
            ),
            timeseries(
                "Memory used",
                "Memory in use per exporter host, with the installed total. " + ALL_TIERS,
                "bytes",
                Q(sum_gauge(MEM_USED, PER_HOST), "{{instance}} used"),
                Q(sum_gauge(MEM_TOTAL, PER_HOST), "{{instance}} total"),
                w=6,
            ),
            timeseries(
                "Disk I/O",
                "Bytes read from and written to block devices per second, per host. " + ALL_TIERS,
                "Bps",
                Q(agg(rate(DISK_READ.sel()), PER_HOST), "{{instance}} read"),
                Q(agg(rate(DISK_WRITTEN.sel()), PER_HOST), "{{instance}} written"),
                w=6,
            ),
            timeseries(
                "Network I/O",
                "Bytes received and sent per second, per host and interface (loopback excluded). "
                + ALL_TIERS,
                "Bps",
                Q(agg(rate(NET_RX.sel()), PER_HOST + ("interface",)), "{{instance}} {{interface}} rx"),
                Q(agg(rate(NET_TX.sel()), PER_HOST + ("interface",)), "{{instance}} {{interface}} tx"),
                w=6,
            ),
        ],
    )


def collector_state() -> str:
    """Per exporter and collector: 1 up, 0 down, 2 for the gpu collector of a host without a GPU.

    The GPU collector is up there (it read NVML, or found no driver) and
    reports ``clary_gpu_devices 0``: a fact about the host, shown neutral
    instead of as a failure.
    """
    up = agg(COLLECTOR_UP.sel(), ("instance", "collector"), op="max")
    no_gpu = f'label_replace({agg(GPU_DEVICES.sel(), ("instance",), op="max")} == 0, "collector", "gpu", "", "")'
    return f"({no_gpu} + {NO_GPU}) and {on('instance', 'collector')} ({up} == 1) or {up}"


def collectors_tile(w: int, h: int):
    """The collector health tile of the performance dashboards and the Overview."""
    return stat(
        "Collectors",
        "Scrape-time collectors per exporter: UP when the last collection succeeded, DOWN when it "
        "failed, NO GPU for the GPU collector of a host without a GPU (nothing to read, nothing "
        "wrong). " + ALL_TIERS,
        "short",
        Q(collector_state(), "{{instance}} {{collector}}"),
        mappings=up_down_mappings(),
        thresholds=[{"color": "red", "value": None}, {"color": "green", "value": 1}],
        graph=False,
        text_mode="value_and_name",
        w=w,
        h=h,
    )


def collector_row() -> Row:
    return Row(
        "Collector health",
        [
            collectors_tile(w=8, h=6),
            timeseries(
                "Collector errors",
                "Scrape-time collector failures per second, by collector. " + ALL_TIERS,
                "ops",
                Q(sum_rate(COLLECTOR_ERRORS, ("collector",)), "{{collector}}"),
                w=8,
                h=6,
            ),
            timeseries(
                "Collector duration",
                "Time each collector took in the last scrape, per exporter. " + ALL_TIERS,
                "s",
                Q(sum_gauge(COLLECTOR_DURATION, ("instance", "collector")), "{{instance}} {{collector}}"),
                w=8,
                h=6,
            ),
            timeseries(
                "Rejected events ratio",
                "Share of ingested events rejected by validation, by event type. " + ALL_TIERS,
                "percentunit",
                Q(rate_ratio(EVENTS, {"outcome": "rejected"}, ("type",)), "{{type}}"),
                min_=0,
                w=8,
                h=6,
            ),
            timeseries(
                "Label overflows",
                "Label values replaced by 'other' because a series budget was exhausted, per "
                "metric and label. Non-zero means an allow-list or budget needs attention. "
                + ALL_TIERS,
                "ops",
                Q(sum_rate(OVERFLOW, ("metric", "label")), "{{metric}} {{label}}"),
                w=8,
                h=6,
            ),
            stat(
                "Exporter versions",
                "Exporter replicas scraped, per version (from the build-info gauge). More than "
                "one version means a rollout in progress. " + ALL_TIERS,
                "short",
                Q(sum_gauge(BUILD_INFO, ("version",)), "{{version}}"),
                text_mode="value_and_name",
                graph=False,
                w=8,
                h=6,
            ),
        ],
    )


def rows(tier: str) -> list[Row]:
    """The tier's own rows open; host, GPU and collector rows (the same on every tier) collapsed."""
    return [
        slo_rows.tier_slo_row(tier),
        requests_row(tier),
        errors_row(tier),
        inference_row(tier),
        *tier_rows.extra_rows(tier, KIND),
        *(replace(row, collapsed=True) for row in (system_row(), gpu_row(), collector_row())),
    ]


# Tile -> the panel that explains it (dashboards.links.with_details).
DETAILS = {
    "Request rate": "Request rate by status code",
    "Error ratio (5xx)": "Error ratio (5xx)",
    "Latency p95": "Slowest routes (p95)",
    "In-flight requests": "In-flight requests and queue length",
}


def dashboard(tier: str) -> Built:
    return tier_dashboard(
        tier,
        KIND,
        f"Performance seen by {tier} customers: request rate, latency quantiles, errors, "
        "in-flight requests and queues, model inference and loading, host CPU/memory/disk/"
        "network, GPUs and the exporter's own collector health.",
        rows(tier),
        DETAILS,
    )
