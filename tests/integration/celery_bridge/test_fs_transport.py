"""The sandbox's filesystem broker: a worker never reads a message that is still being written."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from kombu import Connection

from pipeline.celery_bridge import fs_transport

pytestmark = pytest.mark.integration

COUNT = 200
BODY = "x" * 2_000_000  # big enough that a write takes long enough to be seen mid-way


def connection(folder: Path) -> Connection:
    options = {
        "data_folder_in": str(folder),
        "data_folder_out": str(folder),
        "control_folder": str(folder / "control"),
        "polling_interval": 0,
    }
    return Connection(transport=fs_transport.PATH, transport_options=options)


def test_a_reader_polling_while_messages_are_written_gets_each_one_whole(tmp_path: Path) -> None:
    received: list[str] = []
    failures: list[BaseException] = []

    def read() -> None:
        with connection(tmp_path) as conn, conn.SimpleQueue("q") as queue:
            try:
                while len(received) < COUNT:
                    message = queue.get(block=True, timeout=30)
                    received.append(message.payload)
                    message.ack()
            except BaseException as exc:  # reported by the assertion below
                failures.append(exc)

    # Bound before either side runs: connections of one process share kombu's binding state,
    # so the second would skip its bind and could publish before the first wrote the table.
    with connection(tmp_path) as conn, conn.SimpleQueue("q"):
        pass
    reader = threading.Thread(target=read)
    reader.start()
    with connection(tmp_path) as conn, conn.SimpleQueue("q") as queue:
        for i in range(COUNT):
            queue.put(f"{i}:{BODY}")
    reader.join(60)
    assert failures == []
    assert received == [f"{i}:{BODY}" for i in range(COUNT)]
    assert not list(tmp_path.glob(f"*{fs_transport.PARTIAL}")), "no partial file is left"
