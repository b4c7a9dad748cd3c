"""The watcher's Prometheus metrics (module-level, exposed by the runtime at /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

EVENTS = Counter(
    "pipeline_watcher_events_total", "Task events published, by task state.", ["state"]
)
IGNORED = Counter(
    "pipeline_watcher_ignored_pods_total",
    "Pod changes not reported: unmanaged pods (no task annotations) or phase Unknown.",
    ["why"],
)
WATCH_RESTARTS = Counter(
    "pipeline_watcher_watch_restarts_total",
    "Watch streams restarted, by why: timeout (server ended it), dropped, error, gone.",
    ["namespace", "why"],
)
GONE = Counter(
    "pipeline_watcher_gone_total", "410 Gone answers that forced a relist.", ["namespace"]
)
LAG = Gauge(
    "pipeline_watcher_lag_seconds",
    "Seconds since the API last told this watch anything (event or bookmark).",
    ["namespace"],
)
PODS_DELETED = Counter(
    "pipeline_watcher_pods_deleted_total",
    "Pods deleted, by why: finished (cleanup policy) or pending_timeout.",
    ["why"],
)
FINISH_RETRIES = Counter(
    "pipeline_watcher_finish_retries_total",
    "Finishing an ended pod's try (its log, its launch record) failed and was tried again.",
)
CHECKPOINTS = Counter(
    "pipeline_watcher_checkpoints_total", "Resource versions checkpointed.", ["namespace"]
)
SWEEPS = Counter(
    "pipeline_watcher_sweeps_total", "Pending-timeout and cleanup sweeps completed.", ["namespace"]
)
LOGS = Counter(
    "pipeline_watcher_logs_total",
    "Finished pods' logs: kept on the logs topic, or unavailable (the pod was already gone).",
    ["outcome"],
)
