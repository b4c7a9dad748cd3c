"""The `pods/{name}/attach` subresource: `kubectl attach`, and `kubectl run -i` with it.

Attach joins a running container's own streams over the same WebSocket channels as exec
(`podexec`). Its output is what the container writes, line by line as its log keeps it (so a
prompt without a newline shows once the line ends), from the start of the current run
(a cluster's attach shows only what comes after it, so a quick command's output would be
lost before `kubectl run -i` attaches; here it is not), until the container ends. What the
client sends goes to the container's stdin when the container keeps one open (`stdin: true`,
in process mode); with `stdinOnce` it is closed when the first attach ends, so the command
reads to its end. A client leaving detaches: the container runs on. A simulated container
has no stdin, but its output is attachable all the same.
"""

from __future__ import annotations

import asyncio
import contextlib

import orjson
from aiohttp import web

from . import podexec
from .logs import ContainerLogs, LogWindow
from .podlog import container_name, find_container
from .runtime import ContainerRun
from .status import bad_request
from .store import Key, PodStore

_SUCCESS = {"metadata": {}, "status": "Success"}


class _Attached:
    """The client's input to one container: its stdin, when it has one open."""

    def __init__(self, run: ContainerRun | None, once: bool) -> None:
        self._stdin = run.stdin if run is not None else None
        self._once = once
        self.detached = asyncio.Event()

    async def write(self, data: bytes) -> None:
        if self._stdin is None or self._stdin.is_closing():
            return
        with contextlib.suppress(ConnectionError):
            self._stdin.write(data)
            await self._stdin.drain()

    def resize(self, data: bytes) -> None:
        """The container has no terminal of its own here: nothing to resize."""

    def close_stdin(self) -> None:
        if self._stdin is not None:
            self._stdin.close()

    def kill(self) -> None:
        """The client left: detach, and end the container's input if it was for one attach."""
        if self._once:
            self.close_stdin()
        self.detached.set()


async def serve(
    request: web.Request,
    store: PodStore,
    key: Key,
    logs: dict[str, ContainerLogs],
    live: dict[str, ContainerRun],
) -> web.StreamResponse:
    """Attach to one container of pod `key`; 400 before the upgrade when it cannot be."""
    pod = store.get(key)
    name = container_name(pod, request.query.get("container"))
    phase = (pod.get("status") or {}).get("phase")
    if phase in ("Succeeded", "Failed"):
        raise bad_request(f"cannot attach a container in a completed pod; current phase is {phase}")
    if name not in logs or not podexec.running(pod, name):
        raise bad_request(f'unable to upgrade connection: container not found ("{name}")')
    if request.headers.get("Upgrade", "").lower() != "websocket":
        raise bad_request("Upgrade request required: the sandbox serves attach over WebSocket")
    container = find_container(pod, name)
    attached = _Attached(live.get(name), once=bool(container.get("stdinOnce")))
    ws = web.WebSocketResponse(protocols=podexec.PROTOCOLS, autoping=True)
    await ws.prepare(request)
    reader = asyncio.create_task(podexec.read_client(ws, attached))
    output = asyncio.create_task(_copy_output(ws, logs[name]))
    detached = asyncio.create_task(attached.detached.wait())
    try:
        await asyncio.wait([output, detached], return_when=asyncio.FIRST_COMPLETED)
        if output.done():  # the container ended, the client is still there
            with contextlib.suppress(ConnectionError):
                await ws.send_bytes(bytes([podexec.ERROR]) + orjson.dumps(_SUCCESS))
                await ws.close()
    finally:
        for task in (reader, output, detached):
            task.cancel()
        attached.kill()
    return ws


async def _copy_output(ws: web.WebSocketResponse, logs: ContainerLogs) -> None:
    with contextlib.suppress(ConnectionError):
        async for chunk in logs.current.follow(LogWindow()):
            await ws.send_bytes(bytes([podexec.STDOUT]) + chunk)
