"""Which replica answers for a task, and forwarding a request there (body and stream kept).

Faust's own table routing (`route_req`) forwards neither a request body nor a streamed
answer, which the cancel (a POST) and a followed log need; this is the same decision
(the replica assigned the task's partition) with the request passed through whole.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web
from yarl import URL

from pipeline.messages import TaskKey

if TYPE_CHECKING:
    from pipeline.reducer.app import Reducer

_HOP_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})


class NoOwner(Exception):
    """No replica is assigned the task's partition right now (a rebalance is under way)."""


def _ident(url: URL) -> tuple[str, int]:
    return (url.host or "", int(url.port or 80))


def owner_url(reducer: Reducer, key: TaskKey) -> URL | None:
    """The owning replica's URL, or None when this replica owns the task."""
    app = reducer.app
    try:
        dest: URL = app.router.key_store(reducer.table.name, key.partition_key)
    except KeyError:
        raise NoOwner(f"no replica owns {key.partition_key.decode()} yet") from None
    return None if _ident(dest) == _ident(URL(str(app.conf.canonical_url))) else dest


async def forward(reducer: Reducer, dest: URL, request: web.Request) -> web.StreamResponse:
    """Pass `request` to `dest` and stream its answer back unchanged."""
    url = request.url.with_host(dest.host or "").with_port(dest.port)
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
    body = await request.read()
    async with reducer.app.http_client.request(
        request.method, url, headers=headers, data=body or None
    ) as answer:
        response = web.StreamResponse(status=answer.status)
        for name in ("Content-Type", "WWW-Authenticate", "X-Content-Type-Options"):
            if name in answer.headers:
                response.headers[name] = answer.headers[name]
        await response.prepare(request)
        async for chunk in answer.content.iter_any():
            await response.write(chunk)
        await response.write_eof()
        return response
