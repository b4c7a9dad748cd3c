"""The SQLite ledger against a real file: exclusive claims, expiry, and Celery's own rows."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import pytest
from celery import Celery, states

from pipeline.celery_bridge.app import make_app, make_ledger
from pipeline.celery_bridge.ledger import DispatchRecord
from pipeline.celery_bridge.ledger_sql import SqlLedger
from pipeline.config import CelerySettings


def record(queue: str = "q", status: Literal["sending", "sent"] = "sending") -> DispatchRecord:
    return {
        "status": status, "queue": queue, "payload": {"command": ["true"]}, "reason": None,
        "resends": 0, "resent_at": None,
    }  # fmt: skip


def settings(tmp_path: Path, ttl_s: float = 3600.0) -> CelerySettings:
    folder = str(tmp_path / "broker")
    return CelerySettings(
        broker_url="filesystem://",  # type: ignore[arg-type]
        broker_transport_options={"data_folder_in": folder, "data_folder_out": folder},
        result_backend=f"db+sqlite:///{tmp_path / 'results.sqlite'}",  # type: ignore[arg-type]
        dispatch_record_ttl_s=ttl_s,
    )


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Celery]:
    app = make_app(settings(tmp_path))
    yield app
    app.close()


def ledger_of(app: Celery, tmp_path: Path, ttl_s: float = 3600.0) -> SqlLedger:
    ledger = make_ledger(app, settings(tmp_path, ttl_s))
    assert isinstance(ledger, SqlLedger), "a db+sqlite backend gets the SQL ledger"
    return ledger


def test_only_the_first_claim_wins_and_later_ones_see_its_record(
    app: Celery, tmp_path: Path
) -> None:
    first, second = ledger_of(app, tmp_path), ledger_of(app, tmp_path)  # two processes' view
    assert first.claim("t1", record("first")) is None
    assert second.claim("t1", record("second")) == record("first")
    second.update("t1", record("first", "sent"))
    assert first.claim("t1", record("third")) == record("first", "sent")
    assert first.dispatch("t1") == record("first", "sent")
    assert first.dispatch("other") is None


def test_concurrent_claims_of_one_task_have_exactly_one_winner(app: Celery, tmp_path: Path) -> None:
    ledgers = [ledger_of(app, tmp_path) for _ in range(8)]
    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(lambda i: ledgers[i].claim("race", record(f"q{i}")), range(8)))
    winners = [i for i, existing in enumerate(outcomes) if existing is None]
    assert len(winners) == 1
    assert all(o == record(f"q{winners[0]}") for o in outcomes if o is not None)


def test_an_expired_record_is_gone_and_can_be_claimed_again(app: Celery, tmp_path: Path) -> None:
    ledger = ledger_of(app, tmp_path, ttl_s=2.0)
    assert ledger.claim("t1", record("old")) is None
    ledger.complete("t1", {"ok": True, "exit_code": 0, "reason": None})
    assert ledger.claim("t1", record("new")) == record("old"), "still live"
    deadline = time.monotonic() + 10
    # each record expires ttl_s after it was written: the completion a moment after the claim
    while ledger.dispatch("t1") is not None or ledger.completed("t1") is not None:
        assert time.monotonic() < deadline, "records never expired"
        time.sleep(0.05)
    assert ledger.claim("t1", record("new")) is None
    assert ledger.dispatch("t1") == record("new")


def test_completion_records_round_trip(app: Celery, tmp_path: Path) -> None:
    ledger = ledger_of(app, tmp_path)
    assert ledger.completed("t1") is None
    ledger.complete("t1", {"ok": False, "exit_code": 3, "reason": "exit code 3"})
    assert ledger.completed("t1") == {"ok": False, "exit_code": 3, "reason": "exit code 3"}


def test_completions_of_many_tasks_come_in_one_read(app: Celery, tmp_path: Path) -> None:
    ledger = ledger_of(app, tmp_path)
    ledger.complete("t1", {"ok": True, "exit_code": 0, "log": "hello"})
    ledger.complete("t3", {"ok": False, "exit_code": 1})
    assert ledger.completions(["t1", "t2", "t3"]) == {
        "t1": {"ok": True, "exit_code": 0, "log": "hello"}, "t2": None,
        "t3": {"ok": False, "exit_code": 1},
    }  # fmt: skip
    assert ledger.completions([]) == {}


def test_states_reads_what_celerys_database_backend_stored(app: Celery, tmp_path: Path) -> None:
    ledger = ledger_of(app, tmp_path)
    backend = app.backend
    backend.store_result("done", {"ok": True, "exit_code": 0, "reason": None}, states.SUCCESS)
    backend.store_result("running", None, states.STARTED)
    backend.store_result("broken", ValueError("bad input"), states.FAILURE)
    found = ledger.states(["done", "running", "broken", "queued"])
    done, running, broken = found["done"], found["running"], found["broken"]
    assert done is not None and running is not None and broken is not None
    assert (done["status"], done["result"]) == (
        "SUCCESS", {"ok": True, "exit_code": 0, "reason": None}
    )  # fmt: skip
    assert running["status"] == "STARTED"
    assert broken["status"] == "FAILURE"
    assert isinstance(broken["result"], ValueError), "decoded back into the exception"
    assert found["queued"] is None, "no entry: still waiting in the queue"
    for task_id in ("done", "running", "broken"):  # agrees with Celery's own per-task read
        assert found[task_id]["status"] == backend.get_task_meta(task_id)["status"]  # type: ignore[index]


def test_states_of_an_empty_database_before_any_worker_wrote(app: Celery, tmp_path: Path) -> None:
    assert ledger_of(app, tmp_path).states(["a", "b"]) == {"a": None, "b": None}
    assert ledger_of(app, tmp_path).states([]) == {}
