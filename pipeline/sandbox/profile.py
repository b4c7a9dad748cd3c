"""The sandbox profile: Kafka consumer timings for the local Tansu broker.

`pipeline dev`, the test fixtures and the benchmarks run with these values; production keeps
Kafka's defaults (`KafkaSettings`). Three behaviours of Tansu 0.6, measured, shape them:

- A fetch is held for the full `fetch_max_wait_ms` even when records have arrived (real Kafka
  answers once `fetch_min_bytes` is there), so every hop of the pipeline costs about half the
  wait: one producer→consumer hop at 200 msg/s measured p50 129 / p99 260 ms at the default
  500 ms and p50 16 / p99 45 ms at 25 ms. The price is one fetch round trip per wait per
  consumer, idle or not: about 0.08 CPU-s/s per consumer at 25 ms (client and broker
  together), 0.15 at 10 ms, 0.01 at 500 ms. Under load a fetch carries many records, so the
  CPU per record does not grow with a lower wait (at 1,000 msg/s: 0.26 CPU-s/s at 25 ms,
  0.32 at 500 ms). 25 ms keeps a three-hop launch under 100 ms; a whole idle sandbox
  (`pipeline dev`, nine processes) measured 0.37 CPU-s/s at 25 ms, 0.24 at 100 ms and 0.11
  at 500 ms, so a sandbox that mostly idles may raise the wait. Consumers off the tasks'
  path (the launcher's cancel and launch-ledger followers, the Celery monitor, the reducer,
  the dashboard's dead-letter tail) wait 250 ms: a cancel reaches a running pod, a state the
  reducer's API and a dead letter the dashboard up to that much later, and five consumers
  stop paying 40 round trips a second. The ledger follower also frees the launcher's
  parallelism slots, up to 250 ms after a pod's end; that binds only while `parallelism` is
  full, and at 300 tasks/s with the default 128 it is not (the same rate measured the same
  with it unlimited).
- Its cost is per batch (one partition's records in one request), and a fetch's cost grows
  with the batches the partition holds. Measured at 1,000 msg/s, 4 partitions, one consumer:
  0.50 ms of broker CPU per record at `linger_ms` 0, 0.24 at 5, 0.16 at 10, 0.12 at 20, 0.08
  at 50. With no consumer, producing cost 0.10 ms per record and stayed there; with one
  consumer it went from 0.22 to 0.43 ms over the first 10,000 records, with four from 0.59 to
  1.29 (each consumer's fetches are paid apart); retention brings nothing back. So a sandbox
  run slows as it goes (over a 60 s step at 150 tasks/s the broker went from 0.34 to 0.55
  CPU-s/s), and a topic's every extra reader costs the broker more than its own process. In
  the whole pipeline at 250 tasks/s (a task's ~14 records already travel in ~3 batches), a
  15 ms linger or 2 partitions instead of 4 saved at most 0.2 of the broker's ~1.7 ms per
  task, so the profile keeps the producer's settings. Real Kafka indexes its log, so its
  fetches do not grow costlier this way.
- A stopped group member is never removed by LeaveGroup, so a killed or restarted stage's
  partitions stay with the dead member until its session times out, and a JoinGroup is held
  for half the session. A bare member killed and started again had its partitions back
  after 4.1 s with a 2 s session (6.1 s at 2.5 s, 8.1 s at 4 s, 11.1 s at 6 s), so a
  SIGKILLed stage resumes within 10 s with its start included. The heartbeat is a quarter
  of the session, so a member is evicted only after four missed beats in a row: an event
  loop stalled for 2 s, which a stage on a crowded 2-core machine rarely comes near. Real
  Kafka refuses sessions under `group.min.session.timeout.ms` (6 s by default); there a
  clean stop hands partitions over at once and a crash costs the session timeout (10 s by
  default here).
"""

from __future__ import annotations

from pipeline.config import KafkaSettings

FETCH_MAX_WAIT_MS = 25
FOLLOWER_FETCH_MAX_WAIT_MS = 250
SESSION_TIMEOUT_MS = 2_000
HEARTBEAT_INTERVAL_MS = 500


def sandbox_env() -> dict[str, str]:
    """The profile as `PIPELINE_*` variables, for stage processes and CLI commands."""
    return {
        "PIPELINE_KAFKA_FETCH_MAX_WAIT_MS": str(FETCH_MAX_WAIT_MS),
        "PIPELINE_KAFKA_FOLLOWER_FETCH_MAX_WAIT_MS": str(FOLLOWER_FETCH_MAX_WAIT_MS),
        "PIPELINE_KAFKA_SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS),
        "PIPELINE_KAFKA_HEARTBEAT_INTERVAL_MS": str(HEARTBEAT_INTERVAL_MS),
    }


def sandbox_kafka(bootstrap_servers: str) -> KafkaSettings:
    """Kafka settings for a sandbox broker at `bootstrap_servers`, with the profile's timings."""
    return KafkaSettings(
        bootstrap_servers=bootstrap_servers,
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        follower_fetch_max_wait_ms=FOLLOWER_FETCH_MAX_WAIT_MS,
        session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
    )
