"""The launcher's Prometheus metrics (served on the stage's /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CREATES = Counter(
    "pipeline_launcher_creates_total",
    "Pod launches by outcome: created, exists (409), duplicate (the ledger says the try ran), "
    "cancelled, rejected, expired (submitted before the launch ledger's horizon), "
    "failed (retries exhausted), "
    "retried (an attempt that will be tried again).",
    ["outcome"],
)
API_SECONDS = Histogram(
    "pipeline_launcher_api_seconds",
    "Kubernetes API call latency by verb.",
    ["verb"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
IN_FLIGHT = Gauge(
    "pipeline_launcher_in_flight", "Pods launched and not yet finished (counts to parallelism)."
)
LAUNCHING = Gauge(
    "pipeline_launcher_launching", "Requests taken whose launch is not decided yet (incl. retries)."
)
PAUSED = Gauge(
    "pipeline_launcher_paused", "1 while consumption is paused because parallelism is full."
)
DEAD_LETTERS = Counter(
    "pipeline_launcher_dead_letters_total", "Requests that failed validation, sent to the DLQ."
)
CANCELS = Counter(
    "pipeline_launcher_cancels_total",
    "Cancels handled: ended (pod deleted), never_launched, finished (the pod had ended on its "
    "own), absent (no pod here: the task went elsewhere or has not arrived yet).",
    ["outcome"],
)
