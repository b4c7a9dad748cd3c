"""The reducer's cancel and logs endpoints, through HTTP, `pipeline.client` and the CLI."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
import orjson
import pytest

from pipeline import tasklogs
from pipeline.client import AsyncPipelineClient, PipelineClient, Unauthorized, UnknownTask
from pipeline.config import Settings
from pipeline.kafka import make_producer, started
from pipeline.messages import State, TaskKey, decode_control, encode, make_event
from tests.fixtures.kafka import read_records
from tests.fixtures.reducer import ReducerProcess, event_record, publish, run_cli

pytestmark = pytest.mark.integration

TOKEN = "s3cret-token"
RUNNING = TaskKey("ops", "crunch", "run1")
DONE = TaskKey("ops", "report", "run1", map_index=2)
UNKNOWN = TaskKey("ops", "nothing", "run1")


async def publish_log(settings: Settings, key: TaskKey, text: bytes) -> None:
    record = tasklogs.make_task_log(key, "celery", "tid", text, max_bytes=4096)
    async with started(make_producer(settings.kafka, "test"), settings.kafka) as producer:
        partitions = await producer.partitions_for(settings.topic.logs)
        partition = tasklogs.partition_for(key, partitions)
        await (
            await producer.send(
                settings.topic.logs, encode(record), key=tasklogs.full_key(key), partition=partition
            )
        )


async def test_cancel_needs_the_token_refuses_finished_and_unknown_and_logs_are_served(
    topics: Settings,
    reducer_process: Callable[[], ReducerProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events = [
        make_event(RUNNING, "router", State.QUEUED, executor="celery"),
        make_event(RUNNING, "celery-dispatcher", State.LAUNCHED, celery_task_id="c-1"),
        make_event(DONE, "router", State.QUEUED, executor="celery"),
        make_event(DONE, "celery-monitor", State.SUCCESS, exit_code=0),
    ]
    await publish(topics, [event_record(topics, e) for e in events])
    await publish_log(topics, DONE, b"first line\nsecond line\n")
    monkeypatch.setenv("PIPELINE_REDUCER_API_TOKEN", TOKEN)
    reducer = reducer_process()
    monkeypatch.setenv("PIPELINE_REDUCER_API_URL", reducer.url)
    await reducer.wait_for("/tasks/ops/report/run1/2/1", lambda b: "log" in b["tasks"][0])

    path = "/tasks/ops/crunch/run1/-1/1/cancel"
    async with aiohttp.ClientSession() as session:
        async with session.get(reducer.url + path) as response:
            assert response.status == 405, "a cancel is never a GET"
        async with session.post(reducer.url + path, json={"reason": "x"}) as response:
            assert response.status == 401
        wrong = {"Authorization": "Bearer nope"}
        async with session.post(reducer.url + path, json={}, headers=wrong) as response:
            assert response.status == 401

    with pytest.raises(Unauthorized):
        PipelineClient(reducer.url).cancel(RUNNING, "runaway", "alice")
    client = PipelineClient(reducer.url, token=TOKEN)
    answer = client.cancel(RUNNING, "runaway", "alice")
    assert answer.accepted and answer.control_id
    [record] = await read_records(topics, topics.topic.control, 1)
    control = decode_control(record.value or b"")
    assert record.key == RUNNING.partition_key
    assert (control["control_id"], control["reason"], control["requested_by"]) == (
        answer.control_id,
        "runaway",
        "alice",
    )
    assert TaskKey.from_wire(control["key"]) == RUNNING

    finished = client.cancel(DONE, "late", "alice")
    assert (finished.accepted, finished.state) == (False, "success")
    with pytest.raises(UnknownTask):
        client.cancel(UNKNOWN)

    assert client.logs(DONE) == "first line\nsecond line\n"
    assert client.logs(DONE, tail=1) == "second line\n"
    with pytest.raises(UnknownTask):
        client.logs(UNKNOWN)
    async with AsyncPipelineClient(reducer.url, token=TOKEN) as aclient:
        assert await aclient.logs(DONE, tail=1) == "second line\n"
        assert (await aclient.task(DONE) or {})["state"] == "success"
        assert (await aclient.cancel(DONE)).accepted is False

    code, out, _ = await run_cli("logs", "ops/report/run1/2")
    assert (code, out) == (0, "first line\nsecond line\n")
    code, _, err = await run_cli("cancel", "ops/nothing/run1")
    assert code == 2 and err.startswith("error: unknown task ops/nothing/run1")
    code, out, _ = await run_cli("cancel", "ops/report/run1/2", "--reason", "late")
    assert code == 0 and "already finished (success)" in out
    code, out, err = await run_cli("cancel", "ops/crunch/run1", "--reason", "again")
    assert code == 0, err
    records = await read_records(topics, topics.topic.control, 2)
    assert orjson.loads(records[-1].value or b"")["reason"] == "again"
