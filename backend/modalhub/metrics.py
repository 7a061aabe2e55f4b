"""All Prometheus metrics in one place (scraped at GET /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

WEBHOOKS_RECEIVED = Counter(
    "modalhub_webhooks_received_total",
    "Callbacks received, by outcome (accepted, duplicate, or the HTTP status of a rejection).",
    ["outcome"],
)
INGEST_SECONDS = Histogram(
    "modalhub_ingest_seconds",
    "Time to verify and durably store one callback.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
EVENTS_PROCESSED = Counter(
    "modalhub_events_processed_total",
    "Inbox entries applied to their job, by event type and result (applied or ignored).",
    ["type", "result"],
)
PROCESSING_LAG_SECONDS = Histogram(
    "modalhub_processing_lag_seconds",
    "From the durable store of a callback to its application to the job.",
    buckets=(0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120),
)
INBOX_BACKLOG = Gauge(
    "modalhub_inbox_backlog", "Unprocessed inbox entries, counted at scrape time."
)
PROCESSOR_ERRORS = Counter(
    "modalhub_processor_errors_total", "Processing rounds that failed and will be retried."
)
NOTIFICATIONS = Counter(
    "modalhub_notifications_total",
    "Attempts to tell a job's notify_url that it ended, by outcome (delivered, retrying,"
    " failed: gave up, superseded: another replica's attempt settled it).",
    ["outcome"],
)
POLLER_LEADER = Gauge(
    "modalhub_poller_leader",
    "1 in the process that holds the poller lease (Modal executor), 0 in the others.",
)

# Children bound once: a labels() lookup per request is measurable on the ingest path.
RECEIVED_ACCEPTED = WEBHOOKS_RECEIVED.labels("accepted")
RECEIVED_DUPLICATE = WEBHOOKS_RECEIVED.labels("duplicate")
