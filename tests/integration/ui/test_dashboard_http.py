"""The dashboard over HTTP against a real reducer: pages, paging, escaping, live events, and
the rules for actions (POST only, enabled, same origin, the token)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from pipeline.config import Settings
from pipeline.messages import State, TaskKey, decode_control, make_event
from pipeline.ui.server import make_app
from tests.fixtures.kafka import read_all
from tests.fixtures.polling import eventually
from tests.fixtures.reducer import ReducerProcess, event_record, publish

pytestmark = pytest.mark.integration

HOSTILE = TaskKey("ui", "<script>alert(1)</script>", "run-x")
TOKEN = "s3cret-token"


@asynccontextmanager
async def dashboard(settings: Settings, api_url: str, **ui: Any) -> AsyncIterator[TestClient]:
    configured = settings.updated(ui=ui)
    async with TestClient(TestServer(make_app(configured, api_url))) as client:
        yield client


async def queued(settings: Settings, keys: list[TaskKey]) -> None:
    events = [make_event(k, "router", State.QUEUED, executor="celery") for k in keys]
    await publish(settings, [event_record(settings, e) for e in events])


async def text(client: TestClient, path: str, status: int = 200) -> str:
    response = await client.get(path)
    body = await response.text()
    assert response.status == status, body[:500]
    return body


async def test_pages_render_every_message_value_as_text(
    topics: Settings, reducer_process: Callable[[], ReducerProcess]
) -> None:
    await queued(topics, [HOSTILE])
    bad = (topics.topic.events, b"k", b"<script>alert(3)</script>")
    await publish(topics, [bad])
    reducer = reducer_process()
    await reducer.wait_for("/stats", lambda s: s["tasks"] == 1 and s["outcomes"].get("applied"))
    async with dashboard(topics, reducer.url) as client:
        for path in ("/", "/tasks", "/stages"):
            response = await client.get(path)
            assert response.status == 200
            assert "script-src 'self'" in response.headers["Content-Security-Policy"]
        listing = await text(client, "/tasks?q=script")
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in listing
        assert "<script>alert" not in listing
        detail = await text(
            client, f"/task?dag_id=ui&task_id={HOSTILE.task_id}&run_id=run-x&map_index=-1"
        )
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in detail and "<script>alert" not in detail

        async def letter_shown() -> bool:
            return "alert(3)" in await text(client, "/dead-letters")

        await eventually(letter_shown, timeout_s=30)
        letters = await text(client, "/dead-letters")
        assert "&lt;script&gt;alert(3)&lt;/script&gt;" in letters and "<script>alert" not in letters
        await text(client, "/task?dag_id=ui&task_id=nope&run_id=run-x", status=404)


async def test_the_tasks_table_pages_newest_first_and_filters_by_url(
    topics: Settings, reducer_process: Callable[[], ReducerProcess]
) -> None:
    await queued(topics, [TaskKey("paged", f"t-{n:03}", "run-a") for n in range(120)])
    await queued(topics, [TaskKey("paged", f"t-{n:03}", "run-b") for n in range(5)])
    reducer = reducer_process()
    await reducer.wait_for("/stats", lambda s: s["tasks"] == 125)
    async with dashboard(topics, reducer.url) as client:
        first = await text(client, "/tasks?run_id=run-a")
        assert first.count('<tr class="state-queued">') == 50 and 'rel="next"' in first
        last = await text(client, "/tasks?run_id=run-a&page=3")
        assert last.count('<tr class="state-queued">') == 20 and 'rel="next"' not in last
        assert 'rel="prev"' in last
        other = await text(client, "/tasks?run_id=run-b&q=T-00")
        assert other.count('<tr class="state-queued">') == 5
        rows = await text(client, "/tasks/rows?state=success")
        assert "no task matches" in rows and "<html" not in rows
        assert "bad filter" in await text(client, "/tasks?since=yesterday")


async def test_live_events_push_new_counts_without_a_reload(
    topics: Settings, reducer_process: Callable[[], ReducerProcess]
) -> None:
    await queued(topics, [TaskKey("live", "a", "r")])
    reducer = reducer_process()
    await reducer.wait_for("/stats", lambda s: s["tasks"] == 1)
    async with dashboard(topics, reducer.url, push_interval_s=0.2) as client:
        response = await client.get("/events")
        assert response.headers["Content-Type"] == "text/event-stream"

        async def counts_with(total: int) -> None:
            buffer = b""
            while f'id="total-tasks">{total}<'.encode() not in buffer:
                buffer += await response.content.readany()

        await counts_with(1)
        await queued(topics, [TaskKey("live", "b", "r"), TaskKey("live", "c", "r")])
        await counts_with(3)
        response.close()


async def test_actions_need_a_post_from_this_origin_the_setting_and_the_token(
    topics: Settings,
    reducer_process: Callable[[], ReducerProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = TaskKey("act", "long", "r")
    await queued(topics, [key])
    monkeypatch.setenv("PIPELINE_REDUCER_API_TOKEN", TOKEN)
    reducer = reducer_process()
    await reducer.wait_for("/stats", lambda s: s["tasks"] == 1)
    form = {"dag_id": "act", "task_id": "long", "run_id": "r", "map_index": "-1"}
    form |= {"try_number": "1", "reason": "stop <now>"}
    async with dashboard(topics, reducer.url) as client:
        refused = await client.post("/task/cancel", data=form)
        assert refused.status == 403 and "disabled" in await refused.text()
        assert (await client.get("/task/cancel")).status == 405
    settings = topics.updated(reducer={"api_token": SecretStr(TOKEN)})
    async with dashboard(settings, reducer.url, actions=True) as client:
        page = await text(client, "/task?dag_id=act&task_id=long&run_id=r")
        assert "Cancel try 1" in page and 'name="token"' in page
        assert (await client.post("/task/cancel", data=form)).status == 401
        wrong = await client.post("/task/cancel", data={**form, "token": "guess"})
        assert wrong.status == 401
        cross = await client.post(
            "/task/cancel", data={**form, "token": TOKEN}, headers={"Origin": "http://evil.example"}
        )
        assert cross.status == 403
        sent = await client.post(
            "/task/cancel", data={**form, "token": TOKEN}, allow_redirects=False
        )
        assert sent.status == 303 and "cancel+of+try+1+requested" in sent.headers["Location"]
    records = await read_all(topics, topics.topic.control)
    [control] = [decode_control(r.value) for r in records if r.value]
    assert (control["requested_by"], control["reason"]) == ("dashboard", "stop <now>")
    assert TaskKey.from_wire(control["key"]) == key
