"""`pipeline dev` takes the Redis it is given, and otherwise one of nobody's: its own files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.config import load_settings
from pipeline.sandbox.broker import free_port
from pipeline.sandbox.dev import celery_env
from tests.fixtures.redis import RedisServer

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def no_celery_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("PIPELINE_CELERY_"):
            monkeypatch.delenv(name)


def test_a_configured_redis_that_answers_is_used(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PIPELINE_CELERY_BROKER_URL", redis_server.url(redis_server.new_db()))
    assert celery_env(load_settings(), tmp_path) == {}


def test_unconfigured_it_never_takes_the_machines_redis(tmp_path: Path) -> None:
    """Even when something answers on the default 127.0.0.1:6379, its dbs may be anyone's."""
    env = celery_env(load_settings(), tmp_path)
    assert env["PIPELINE_CELERY_BROKER_URL"] == "filesystem://"
    assert env["PIPELINE_CELERY_RESULT_BACKEND"].startswith(f"db+sqlite:///{tmp_path}")
    assert (tmp_path / "celery-broker").is_dir()


def test_a_configured_redis_that_does_not_answer_falls_back_to_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PIPELINE_CELERY_BROKER_URL", f"redis://127.0.0.1:{free_port()}/0")
    assert celery_env(load_settings(), tmp_path)["PIPELINE_CELERY_BROKER_URL"] == "filesystem://"
