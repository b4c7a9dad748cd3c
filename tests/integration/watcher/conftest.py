"""Watcher settings bound to the session broker and this test's emulator, with short timings."""

from __future__ import annotations

import uuid

import pytest

from pipeline.config import Settings, load_settings
from pipeline.kafka import create_topics
from pipeline.sandbox.kube import KubeEmulator

FAST_WATCHER = {
    "PIPELINE_WATCHER_PENDING_CHECK_INTERVAL_S": "0.2",
    "PIPELINE_WATCHER_CHECKPOINT_INTERVAL_S": "0.2",
    "PIPELINE_WATCHER_RECONNECT_BACKOFF_S": "0.05",
    "PIPELINE_WATCHER_RECONNECT_BACKOFF_MAX_S": "0.5",
    "PIPELINE_WATCHER_WATCH_TIMEOUT_S": "5",
    "PIPELINE_WATCHER_DELETE_PODS": "false",
}


@pytest.fixture
async def watcher_settings(
    topics: Settings, kube_emulator: KubeEmulator, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """Settings (also exported as env for child processes) and every topic created."""
    monkeypatch.setenv("PIPELINE_KUBE_CONFIG", str(kube_emulator.kubeconfig_path))
    monkeypatch.setenv(
        "PIPELINE_TOPIC_WATCHER_CHECKPOINTS", f"tasks.watcher-checkpoints.{uuid.uuid4().hex[:8]}"
    )
    for name, value in FAST_WATCHER.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    await create_topics(settings.kafka, settings.topic)
    return settings
