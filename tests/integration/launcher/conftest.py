"""The launcher against the real broker and the Kubernetes API emulator (simulate mode)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from pipeline.config import Settings, load_settings
from pipeline.sandbox.kube import KubeEmulator
from tests.integration.launcher.support import SetEnv


@pytest.fixture
def launcher_env(
    topics: Settings, kube_emulator: KubeEmulator, monkeypatch: pytest.MonkeyPatch
) -> SetEnv:
    """Settings for a launcher bound to this test's topics, emulator and consumer group.

    Call it with launcher settings (`parallelism=5`) to change them; they are exported as
    PIPELINE_LAUNCHER_* so a `pipeline run launcher` subprocess sees the same.
    """
    monkeypatch.setenv("PIPELINE_KUBE_CONFIG", str(kube_emulator.kubeconfig_path))
    monkeypatch.setenv("PIPELINE_LAUNCHER_GROUP_ID", f"launcher-{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("PIPELINE_LAUNCHER_SESSION_TIMEOUT_MS", "3000")
    monkeypatch.setenv("PIPELINE_LAUNCHER_RETRY_BASE_S", "0.05")
    monkeypatch.setenv("PIPELINE_LAUNCHER_COMMIT_INTERVAL_S", "0.05")
    monkeypatch.setenv("PIPELINE_RUNTIME_INSTANCE", "launcher-test")

    def configure(**launcher: Any) -> Settings:
        for name, value in launcher.items():
            monkeypatch.setenv(f"PIPELINE_LAUNCHER_{name.upper()}", str(value))
        return load_settings()

    return configure
