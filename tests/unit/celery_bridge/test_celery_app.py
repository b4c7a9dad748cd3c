"""Transport options and the ledger follow the configured URLs: Redis, or filesystem + SQLite."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from pipeline.celery_bridge.app import make_app, make_ledger, transport_options
from pipeline.celery_bridge.ledger_redis import RedisLedger
from pipeline.celery_bridge.ledger_sql import SqlLedger
from pipeline.config import CelerySettings


def filesystem(tmp_path: Path, **options: object) -> CelerySettings:
    folder = str(tmp_path / "queues")
    return CelerySettings(
        broker_url="filesystem://",  # type: ignore[arg-type]
        broker_transport_options={"data_folder_in": folder, "data_folder_out": folder, **options},
        result_backend=f"db+sqlite:///{tmp_path / 'results.sqlite'}",  # type: ignore[arg-type]
    )


def test_redis_gets_its_visibility_timeout_and_configured_options_win() -> None:
    celery = CelerySettings(
        visibility_timeout_s=9000, broker_transport_options={"socket_connect_timeout": 2}
    )
    options = transport_options(celery, fail_fast=True)
    assert options["visibility_timeout"] == 9000
    assert options["socket_connect_timeout"] == 2
    assert options["max_retries"] == 0


def test_filesystem_gets_no_redis_options_and_a_shared_control_folder(tmp_path: Path) -> None:
    options = transport_options(filesystem(tmp_path))
    assert "visibility_timeout" not in options
    assert "unacked_restore_interval" not in options
    assert options["control_folder"] == str(tmp_path / "queues" / "control")
    custom = transport_options(filesystem(tmp_path, control_folder=str(tmp_path / "c")))
    assert custom["control_folder"] == str(tmp_path / "c")


def test_filesystem_needs_its_folders() -> None:
    with pytest.raises(ValidationError, match="data_folder_in, data_folder_out"):
        CelerySettings(broker_url="filesystem://")  # type: ignore[arg-type]


def test_the_ledger_follows_the_result_backend(tmp_path: Path) -> None:
    sql = filesystem(tmp_path)
    app = make_app(sql)
    try:
        assert isinstance(make_ledger(app, sql), SqlLedger)
        assert (tmp_path / "queues" / "control").is_dir(), "the folders exist before use"
    finally:
        app.close()
    redis = CelerySettings()
    app = make_app(redis)
    try:
        assert isinstance(make_ledger(app, redis), RedisLedger)
    finally:
        app.close()
