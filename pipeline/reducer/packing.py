"""Finished states held deflated: the table keeps a retention's tries (7 days by default),
and nearly all of them are finished and rarely read again.

A state's JSON is ~1.4 kB, most of it field names, states, sources and timestamps that every
state repeats, so it is deflated against a preset dictionary made of one typical state: a
finished state takes ~250 bytes where its JSON takes ~1,400. Packing costs ~8 µs, once per
try when it finishes and once per finished state a recovery reads (whose check of the record
costs as much); unpacking ~3 µs, as much again as the decode that follows, which a rebuild of
the listing pays for every state it holds (only after a rebalance brings partitions to a
running replica: `pipeline.reducer.listing.Arrivals`). The packed
form lives only in a replica's memory (the changelog keeps the JSON), so the dictionary can
change from one release to the next.
"""

from __future__ import annotations

import zlib

import orjson

PACKED = b"\x00"
"""The first byte of a packed state: a state's JSON starts with `{`."""

_WBITS = -12  # raw deflate, a 4 kB window: the dictionary and a state fit in it
_TIME = "2026-01-01T00:00:00.000000Z"
_STEPS = (
    ("queued", "router"),
    ("launched", "launcher"),
    ("running", "watcher"),
    ("success", "watcher"),
)
_KEY = {"dag_id": "", "task_id": "", "run_id": "", "map_index": -1, "try_number": 1}
_DICTIONARY = orjson.dumps(
    {
        "schema_version": 1,
        "key": _KEY,
        "state": "success",
        "first_seen": _TIME,
        "updated_at": _TIME,
        "history": [
            {"state": s, "event_id": "", "source": by, "reason": None, "observed_at": _TIME}
            for s, by in _STEPS
        ],
        "executor": "kubernetes",
        "reason": None,
        "request": {
            "schema_version": 1,
            "key": _KEY,
            "command": ["python", "-m", "airflow.sdk.execution_time.execute_workload"],
            "queue": "kubernetes",
            "submitted_at": _TIME,
            "routing": {
                "target": "kubernetes",
                "topic": "tasks.kubernetes",
                "routed_at": _TIME,
                "source_partition": 0,
                "source_offset": 0,
            },
        },
        "pod_name": "",
        "namespace": "default",
        "celery_task_id": "",
        "exit_code": 0,
        "log": {"partition": 0, "offset": 0, "bytes": 0},
    }
)


def pack(encoded: bytes) -> bytes:
    """A state's JSON, deflated and marked."""
    deflate = zlib.compressobj(1, zlib.DEFLATED, _WBITS, 8, zlib.Z_DEFAULT_STRATEGY, _DICTIONARY)
    return b"".join((PACKED, deflate.compress(encoded), deflate.flush()))


def unpack(held: bytes) -> bytes:
    """The JSON of a held state, packed or not."""
    if not held.startswith(PACKED):
        return held
    inflate = zlib.decompressobj(_WBITS, _DICTIONARY)
    return inflate.decompress(memoryview(held)[1:]) + inflate.flush()
