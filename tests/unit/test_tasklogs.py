"""Task logs as kept: bounded to the newest bytes, secrets masked, on the task's partition."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pipeline import tasklogs
from pipeline.messages import Kind, TaskKey, encode, validate

KEY = TaskKey("etl", "extract", "manual__1", try_number=2)


@given(st.binary(max_size=5000), st.integers(1024, 4096))
def test_the_bound_keeps_the_newest_bytes_and_counts_the_dropped(data: bytes, limit: int) -> None:
    kept, dropped = tasklogs.bounded(data, limit)
    assert len(kept) <= limit
    assert kept + b"" == data[len(data) - len(kept) :]
    assert dropped == len(data) - len(kept)


def test_a_record_masks_secret_env_values_and_validates() -> None:
    secrets = tasklogs.secrets_of({"DB_PASSWORD": "hunter22", "API_TOKEN": "t0k3n!", "USER": "bob"})
    record = tasklogs.make_task_log(
        KEY, "celery", "tid", b"user bob pw hunter22 t0k3n!\n\xff", max_bytes=1024, secrets=secrets
    )
    validate(Kind.TASK_LOG, record)
    assert record["text"] == "user bob pw *** ***\n\ufffd"
    assert tasklogs.decode_task_log(encode(record)) == record


def test_log_lies_on_the_partition_of_the_task_events() -> None:
    from aiokafka.partitioner import DefaultPartitioner

    partitions = [0, 1, 2, 3]
    expected = DefaultPartitioner()(KEY.partition_key, partitions, partitions)
    assert tasklogs.partition_for(KEY, partitions) == expected
    other_try = TaskKey("etl", "extract", "manual__1", try_number=7)
    assert tasklogs.partition_for(other_try, partitions) == expected
    assert tasklogs.full_key(KEY) != tasklogs.full_key(other_try)


def test_tail_takes_the_last_lines() -> None:
    assert tasklogs.tail("a\nb\nc\n", 2) == "b\nc\n"
    assert tasklogs.tail("a\nb", None) == "a\nb"
    assert tasklogs.tail("a\nb", 0) == ""
