"""Consumer timings: every consumer, faust's included, takes them from the settings."""

from __future__ import annotations

import pytest

from pipeline.config import KafkaSettings, Settings, load_settings
from pipeline.kafka import group_timeouts, make_consumer
from pipeline.reducer.app import faust_app
from pipeline.sandbox.profile import sandbox_env, sandbox_kafka


def test_production_defaults_are_kafkas() -> None:
    kafka = KafkaSettings()
    assert kafka.fetch_max_wait_ms == 500
    assert group_timeouts(kafka) == {"session_timeout_ms": 10_000, "heartbeat_interval_ms": 3333}


def test_a_stage_session_wins_and_the_heartbeat_stays_under_a_third_of_it() -> None:
    kafka = KafkaSettings(session_timeout_ms=9_000, heartbeat_interval_ms=2_000)
    assert group_timeouts(kafka) == {"session_timeout_ms": 9_000, "heartbeat_interval_ms": 2_000}
    assert group_timeouts(kafka, 3_000) == {
        "session_timeout_ms": 3_000,
        "heartbeat_interval_ms": 1_000,
    }


def test_the_sandbox_profile_env_and_settings_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in sandbox_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PIPELINE_KAFKA_BOOTSTRAP_SERVERS", "broker:1")
    assert load_settings().kafka == sandbox_kafka("broker:1")


async def test_every_consumer_takes_the_fetch_wait_and_group_members_the_session() -> None:
    kafka = sandbox_kafka("127.0.0.1:1")
    member = make_consumer(kafka, "t", group_id="g", client_id="test")
    reader = make_consumer(kafka, "t", group_id=None, client_id="test")
    assert member._fetch_max_wait_ms == reader._fetch_max_wait_ms == kafka.fetch_max_wait_ms
    assert member._session_timeout_ms == kafka.session_timeout_ms
    assert member._heartbeat_interval_ms == kafka.heartbeat_interval_ms


async def test_the_reducers_faust_consumer_takes_them_too() -> None:
    """Faust hard-codes a 1500 ms fetch wait; the reducer's transport replaces it with the
    follower wait (the reducer is off the tasks' path)."""
    kafka = sandbox_kafka("127.0.0.1:1")
    assert kafka.follower_fetch_max_wait_ms != kafka.fetch_max_wait_ms
    app = faust_app(Settings(kafka=kafka))
    consumer = app.consumer._thread._create_worker_consumer(app.transport)
    assert consumer._fetch_max_wait_ms == kafka.follower_fetch_max_wait_ms
    assert consumer._session_timeout_ms == kafka.session_timeout_ms
    assert consumer._heartbeat_interval_ms == kafka.heartbeat_interval_ms
