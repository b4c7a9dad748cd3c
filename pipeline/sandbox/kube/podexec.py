"""The `pods/{name}/exec` subresource over WebSocket: `kubectl exec` into a process-mode pod.

kubectl (and client-go) open exec as a WebSocket with the `v5.channel.k8s.io` subprotocol,
the official Python client's `stream()` with `v4.channel.k8s.io`. Every message is binary,
its first byte a channel: 0 stdin, 1 stdout, 2 stderr, 3 the final `Status`, 4 terminal
resize (`{"Width": w, "Height": h}`), and in v5, 255 closes the channel its next byte names
(how kubectl says stdin reached its end). The command runs beside the container's process,
as its argv (never through a shell), with the container's environment and working directory;
with `tty` it runs on a pseudo-terminal, as `kubectl exec -it` expects. A pod of a simulated
kubelet has no process to join, so exec there is refused with a 400 that says so. A client
gone mid-session ends the command (SIGKILL to its process group), and so does its container
stopping or its pod going away, as a container's exec processes end with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import os
import pty
import signal
import struct
import termios
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import orjson
from aiohttp import WSMsgType, web

from . import query
from .podlog import container_name, container_statuses, find_container
from .runtime import container_env
from .status import JsonObj, bad_request
from .store import Event, Key, PodStore, pod_key

PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
_CHUNK = 32 * 1024

Send = Callable[[int, bytes], Awaitable[None]]


@dataclass(frozen=True)
class ExecRequest:
    """What `PodExecOptions` asks for, checked against the pod."""

    argv: list[str]
    container: JsonObj
    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool

    @classmethod
    def parse(cls, pod: JsonObj, request: web.Request) -> ExecRequest:
        params = request.query
        argv = params.getall("command", [])
        if not argv:
            raise bad_request("you must specify at least one command for the container")
        name = container_name(pod, params.get("container"))
        container = find_container(pod, name)
        if not running(pod, name):
            raise bad_request(f'unable to upgrade connection: container not found ("{name}")')
        tty = query.flag(params, "tty")
        return cls(
            argv=list(argv),
            container=container,
            stdin=query.flag(params, "stdin"),
            stdout=query.flag(params, "stdout"),
            stderr=query.flag(params, "stderr") and not tty,  # a terminal has one output
            tty=tty,
        )


async def serve(
    request: web.Request, store: PodStore, key: Key, runs_processes: bool
) -> web.StreamResponse:
    """Run one exec session in pod `key`; 400 before the upgrade when it cannot run."""
    pod = store.get(key)
    if not runs_processes:
        raise bad_request(
            "exec needs the sandbox kubelet in process mode: a simulated container runs no "
            "process to join (start the emulator with --mode process)"
        )
    wanted = ExecRequest.parse(pod, request)
    if request.headers.get("Upgrade", "").lower() != "websocket":
        raise bad_request("Upgrade request required: the sandbox serves exec over WebSocket")
    ws = web.WebSocketResponse(protocols=PROTOCOLS, autoping=True)
    await ws.prepare(request)

    async def send(channel: int, data: bytes) -> None:
        await ws.send_bytes(bytes([channel]) + data)

    try:
        session = await _Session.start(pod, wanted, send)
    except OSError as exc:
        message = f'exec: "{wanted.argv[0]}": {exc.strerror or exc}'
        await send(ERROR, orjson.dumps(_not_started(message)))
        await ws.close()
        return ws
    unsubscribe = _end_with_container(store, key, wanted.container["name"], session)
    try:
        reader = asyncio.create_task(read_client(ws, session))
        code = await session.wait()
        reader.cancel()
        with contextlib.suppress(ConnectionError):  # unless the client already left
            await send(ERROR, orjson.dumps(_exit_status(wanted.argv, code)))
            await ws.close()
    finally:
        unsubscribe()
        session.kill()
    return ws


def _end_with_container(
    store: PodStore, key: Key, container: str, session: _Session
) -> Callable[[], None]:
    """Kill the session once its container stops running or its pod is gone, as a
    container's exec processes end with it; returns the unsubscribe function."""

    def check(event: Event) -> None:
        if pod_key(event.obj) == key and (
            event.type == "DELETED" or not running(event.obj, container)
        ):
            session.kill()

    unsubscribe = store.add_listener(check)
    if key not in store or not running(store.get(key), container):  # it ended meanwhile
        session.kill()
    return unsubscribe


class ClientInput(Protocol):
    """Where what the client sends goes: a command's (exec) or a container's (attach)."""

    async def write(self, data: bytes) -> None: ...

    def resize(self, data: bytes) -> None: ...

    def close_stdin(self) -> None: ...

    def kill(self) -> None: ...


async def read_client(ws: web.WebSocketResponse, session: ClientInput) -> None:
    """stdin, resizes and stream closes from the client; its leaving calls `kill`.
    Text frames carry the same as binary ones (the official client sends a `str` as text)."""
    async for message in ws:
        if message.type == WSMsgType.TEXT:
            frame: bytes = message.data.encode()
        elif message.type == WSMsgType.BINARY:
            frame = message.data
        else:
            continue
        if not frame:
            continue
        channel, data = frame[0], frame[1:]
        if channel == STDIN:
            await session.write(data)
        elif channel == RESIZE:
            session.resize(data)
        elif channel == CLOSE and data[:1] == bytes([STDIN]):
            session.close_stdin()
    session.kill()


class _Session:
    """The command's process, with pipes or a pseudo-terminal for its streams."""

    def __init__(
        self, process: asyncio.subprocess.Process, pumps: list[asyncio.Task[None]]
    ) -> None:
        self._process = process
        self._pumps = pumps
        self._terminal: int | None = None
        self._terminal_input: int | None = None  # its own descriptor of the terminal

    @classmethod
    async def start(cls, pod: JsonObj, wanted: ExecRequest, send: Send) -> _Session:
        env = container_env(pod, wanted.container)
        cwd = wanted.container.get("workingDir") or None
        if wanted.tty:
            return await cls._start_on_terminal(wanted, env, cwd, send)
        pipe, none = asyncio.subprocess.PIPE, asyncio.subprocess.DEVNULL
        process = await asyncio.create_subprocess_exec(
            *wanted.argv,
            env=env,
            cwd=cwd,
            stdin=pipe if wanted.stdin else none,
            stdout=pipe if wanted.stdout else none,
            stderr=pipe if wanted.stderr else none,
            start_new_session=True,
        )
        pumps = [
            asyncio.create_task(_pump(stream, channel, send))
            for stream, channel in ((process.stdout, STDOUT), (process.stderr, STDERR))
            if stream is not None
        ]
        return cls(process, pumps)

    @classmethod
    async def _start_on_terminal(
        cls, wanted: ExecRequest, env: dict[str, str], cwd: str | None, send: Send
    ) -> _Session:
        terminal, child_end = pty.openpty()
        try:
            process = await asyncio.create_subprocess_exec(
                *wanted.argv,
                env={"TERM": "xterm", **env},
                cwd=cwd,
                stdin=child_end,
                stdout=child_end,
                stderr=child_end,
                start_new_session=True,
                preexec_fn=functools.partial(_take_terminal, child_end),
            )
        except OSError:
            os.close(terminal)
            raise
        finally:
            os.close(child_end)
        output = asyncio.StreamReader()
        await asyncio.get_running_loop().connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(output), os.fdopen(terminal, "rb", 0)
        )
        session = cls(process, [asyncio.create_task(_pump(output, STDOUT, send))])
        session._terminal = terminal
        session._terminal_input = os.dup(terminal)
        os.set_blocking(session._terminal_input, False)
        return session

    async def write(self, data: bytes) -> None:
        if self._terminal_input is not None:
            with contextlib.suppress(OSError):  # the command has gone
                await _write_to_terminal(self._terminal_input, data)
            return
        writer = self._process.stdin
        if writer is None or writer.is_closing():
            return
        with contextlib.suppress(ConnectionError):
            writer.write(data)
            await writer.drain()

    def close_stdin(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        elif self._terminal_input is not None:
            with contextlib.suppress(OSError):
                os.write(self._terminal_input, b"\x04")  # the terminal's end-of-file character

    def resize(self, data: bytes) -> None:
        if self._terminal is None:
            return
        with contextlib.suppress(ValueError, TypeError, KeyError, OSError, orjson.JSONDecodeError):
            size = orjson.loads(data)
            window = struct.pack("HHHH", int(size["Height"]), int(size["Width"]), 0, 0)
            fcntl.ioctl(self._terminal, termios.TIOCSWINSZ, window)

    async def wait(self) -> int:
        code = await self._process.wait()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        return 128 - code if code < 0 else code

    def kill(self) -> None:
        if self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)
        if self._terminal_input is not None:
            os.close(self._terminal_input)
            self._terminal_input = None


async def _pump(stream: asyncio.StreamReader | None, channel: int, send: Send) -> None:
    """Copy one output stream to its channel until it ends (a terminal ends with EIO)."""
    assert stream is not None
    with contextlib.suppress(OSError, ConnectionError):
        while chunk := await stream.read(_CHUNK):
            await send(channel, chunk)


async def _write_to_terminal(terminal: int, data: bytes) -> None:
    """All of `data` to the terminal, waiting while the command is slow to read.

    Written directly rather than through a write-pipe transport: uvloop's also reads its
    descriptor (to notice the far end closing), which on a terminal takes the command's
    output from the reader.
    """
    loop = asyncio.get_running_loop()
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(terminal, view) :]
        except BlockingIOError:
            writable: asyncio.Future[None] = loop.create_future()
            loop.add_writer(terminal, _resolve, writable)
            try:
                await writable
            finally:
                loop.remove_writer(terminal)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _take_terminal(terminal: int) -> None:
    """In the child: lead a new session with `terminal` as its controlling terminal.

    asyncio's loop calls this after its own setsid (so this one is refused and ignored);
    uvloop calls it straight after the fork, before its setsid and before the terminal is
    the child's fd 0, hence the explicit session and descriptor.
    """
    with contextlib.suppress(PermissionError):
        os.setsid()
    fcntl.ioctl(terminal, termios.TIOCSCTTY, 0)


def running(pod: JsonObj, name: str) -> bool:
    """Whether container `name` of `pod` (an init container too) is running now."""
    return any(
        s.get("name") == name and "running" in (s.get("state") or {})
        for s in container_statuses(pod)
    )


def _exit_status(argv: list[str], code: int) -> JsonObj:
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    message = (
        f"command terminated with non-zero exit code: error executing command "
        f"[{' '.join(argv)}], exit code {code}"
    )
    status = _failure(message, "NonZeroExitCode")
    status["details"] = {"causes": [{"reason": "ExitCode", "message": str(code)}]}
    return status


def _not_started(message: str) -> JsonObj:
    """The Status a kubelet sends when the runtime cannot start the command (code 500)."""
    status = _failure(message, "InternalError")
    return {**status, "details": {"causes": [{"message": message}]}, "code": 500}


def _failure(message: str, reason: str) -> JsonObj:
    return {"metadata": {}, "status": "Failure", "message": message, "reason": reason}
