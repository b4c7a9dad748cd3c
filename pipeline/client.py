"""A small client of the reducer's HTTP API, blocking (`PipelineClient`) or async
(`AsyncPipelineClient`): task states, cancel, logs. What the CLI, the Airflow executor and
the dashboard use instead of speaking HTTP themselves.

    client = PipelineClient("http://127.0.0.1:8090", token=None)
    client.task(TaskKey("etl", "extract", "manual__1"))        # one try's TaskState, or None
    client.cancel(key, reason="runaway", requested_by="alice")  # CancelAnswer
    client.logs(key, tail=100)                                  # text
    for chunk in client.follow_logs(key): ...                   # text as it is printed

Errors: `UnknownTask` (404), `Unauthorized` (401), `ApiUnavailable` (no answer), else
`ApiError` with the status; each says what happened in one line.
"""

from __future__ import annotations

import codecs
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from pipeline.messages import TaskKey

DEFAULT_TIMEOUT_S = 30.0


class ApiError(Exception):
    """The API answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class UnknownTask(ApiError):
    """The reducer knows no such task (or try), or has no log for it."""


class Unauthorized(ApiError):
    """The API wants a (different) bearer token."""


class ApiUnavailable(ConnectionError):
    """The API did not answer."""


@dataclass(frozen=True)
class CancelAnswer:
    """`accepted`: a cancel was published (`control_id`); else the try had finished (`state`)."""

    accepted: bool
    control_id: str | None = None
    state: str | None = None


def task_path(key: TaskKey, *, with_try: bool = True) -> str:
    parts = [key.dag_id, key.task_id, key.run_id, str(key.map_index)]
    if with_try:
        parts.append(str(key.try_number))
    return "/tasks/" + "/".join(urllib.parse.quote(p, safe="") for p in parts)


def _query(params: dict[str, Any]) -> str:
    kept = {k: str(v) for k, v in params.items() if v is not None and v != ""}
    return f"?{urllib.parse.urlencode(kept)}" if kept else ""


def _error(status: int, body: bytes, url: str) -> ApiError:
    try:
        detail = orjson.loads(body).get("error") or body.decode(errors="replace")
    except (orjson.JSONDecodeError, AttributeError):
        detail = body.decode(errors="replace")
    message = f"{detail} ({status} from {url})".strip()
    if status == 404:
        return UnknownTask(status, message)
    if status == 401:
        return Unauthorized(status, message)
    return ApiError(status, message)


def _cancel_answer(body: dict[str, Any]) -> CancelAnswer:
    return CancelAnswer(bool(body["accepted"]), body.get("control_id"), body.get("state"))


class PipelineClient:
    """Blocking client (urllib, no extra dependency)."""

    def __init__(
        self, api_url: str, token: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s

    def _open(self, method: str, path: str, body: Any = None, timeout: float | None = None) -> Any:
        url = self.api_url + path
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None
        if body is not None:
            data = orjson.dumps(body)
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            return urllib.request.urlopen(request, timeout=timeout or self.timeout_s)
        except urllib.error.HTTPError as exc:
            raise _error(exc.code, exc.read(), url) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiUnavailable(
                f"cannot reach the reducer API at {self.api_url} ({reason})"
            ) from None

    def _json(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        with self._open(method, path, body) as response:
            answer: dict[str, Any] = orjson.loads(response.read())
            return answer

    def tries(self, key: TaskKey) -> list[dict[str, Any]]:
        """Every try of the key's task instance (its try_number is ignored), oldest first."""
        try:
            return list(self._json("GET", task_path(key, with_try=False))["tasks"])
        except UnknownTask:
            return []

    def task(self, key: TaskKey) -> dict[str, Any] | None:
        """One try's TaskState, or None when the reducer has none."""
        try:
            [state] = self._json("GET", task_path(key))["tasks"]
        except UnknownTask:
            return None
        return dict(state)

    def tasks(self, **filters: Any) -> list[dict[str, Any]]:
        """`GET /tasks` with filters: dag_id, task_id, run_id, state, executor, limit."""
        return list(self._json("GET", "/tasks" + _query(filters))["tasks"])

    def cancel(self, key: TaskKey, reason: str = "", requested_by: str = "api") -> CancelAnswer:
        body = {"reason": reason, "requested_by": requested_by}
        return _cancel_answer(self._json("POST", task_path(key) + "/cancel", body))

    def logs(self, key: TaskKey, tail: int | None = None) -> str:
        with self._open("GET", task_path(key) + "/logs" + _query({"tail": tail})) as response:
            text: str = response.read().decode(errors="replace")
            return text

    def follow_logs(self, key: TaskKey, tail: int | None = None) -> Iterator[str]:
        """The log so far, then new output as it is printed, until the try ends."""
        path = task_path(key) + "/logs" + _query({"tail": tail, "follow": 1})
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        with self._open("GET", path, timeout=3600.0) as response:
            while chunk := response.read1(65536):
                yield decoder.decode(chunk)
            yield decoder.decode(b"", final=True)


class AsyncPipelineClient:
    """The same API with aiohttp, for event-loop callers; use as `async with`."""

    def __init__(
        self, api_url: str, token: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.token = token
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> AsyncPipelineClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
            self._session = aiohttp.ClientSession(headers=headers)
        return self._session

    async def _json(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        url = self.api_url + path
        try:
            async with self._client().request(
                method, url, json=body, timeout=self.timeout
            ) as response:
                data = await response.read()
                if response.status >= 400:
                    raise _error(response.status, data, url)
                answer: dict[str, Any] = orjson.loads(data)
                return answer
        except aiohttp.ClientConnectionError as exc:
            raise ApiUnavailable(
                f"cannot reach the reducer API at {self.api_url} ({exc})"
            ) from None

    async def tries(self, key: TaskKey) -> list[dict[str, Any]]:
        try:
            return list((await self._json("GET", task_path(key, with_try=False)))["tasks"])
        except UnknownTask:
            return []

    async def task(self, key: TaskKey) -> dict[str, Any] | None:
        try:
            [state] = (await self._json("GET", task_path(key)))["tasks"]
        except UnknownTask:
            return None
        return dict(state)

    async def tasks(self, **filters: Any) -> list[dict[str, Any]]:
        return list((await self._json("GET", "/tasks" + _query(filters)))["tasks"])

    async def page(self, **query: Any) -> dict[str, Any]:
        """`GET /tasks` as is: `{"tasks": [...], "more": bool}` for filters, offset, limit."""
        return await self._json("GET", "/tasks" + _query(query))

    async def stats(self) -> dict[str, Any]:
        return await self._json("GET", "/stats")

    async def timeline(self, seconds: int = 300) -> dict[str, Any]:
        """Per-second transitions and latency histograms of the last `seconds`."""
        return await self._json("GET", "/timeline" + _query({"seconds": seconds}))

    async def cancel(
        self, key: TaskKey, reason: str = "", requested_by: str = "api"
    ) -> CancelAnswer:
        body = {"reason": reason, "requested_by": requested_by}
        return _cancel_answer(await self._json("POST", task_path(key) + "/cancel", body))

    async def logs(self, key: TaskKey, tail: int | None = None) -> str:
        return "".join([chunk async for chunk in self._logs(key, tail, follow=False)])

    async def follow_logs(self, key: TaskKey, tail: int | None = None) -> AsyncIterator[str]:
        async for chunk in self._logs(key, tail, follow=True):
            yield chunk

    async def _logs(self, key: TaskKey, tail: int | None, *, follow: bool) -> AsyncIterator[str]:
        url = (
            self.api_url
            + task_path(key)
            + "/logs"
            + _query({"tail": tail, "follow": 1 if follow else None})
        )
        timeout = aiohttp.ClientTimeout(total=None) if follow else self.timeout
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        try:
            async with self._client().get(url, timeout=timeout) as response:
                if response.status >= 400:
                    raise _error(response.status, await response.read(), url)
                async for chunk in response.content.iter_any():
                    yield decoder.decode(chunk)
                yield decoder.decode(b"", final=True)
        except aiohttp.ClientConnectionError as exc:
            raise ApiUnavailable(
                f"cannot reach the reducer API at {self.api_url} ({exc})"
            ) from None
