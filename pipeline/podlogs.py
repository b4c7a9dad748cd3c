"""A pod's log through the Kubernetes API (`read_namespaced_pod_log`), off the event loop.

Shared by the watcher (which keeps a finished pod's tail before the pod goes) and the
reducer's API (which serves a running pod's log, followed if asked). The client is blocking,
so a followed log is read in a thread and handed to the loop chunk by chunk. The values of the
pod's secret-looking env variables are masked line by line (so a value split across two reads
is still caught); a line is never interpreted.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from pipeline.tasklogs import mask, secrets_of

MAIN_CONTAINER: Final = "base"
FOLLOW_QUIET_S: Final = 24 * 3600.0


class PodLogUnavailable(Exception):
    """The pod is gone, or its container has not started: there is no log to read (yet)."""


def _pod_secrets(pod: Mapping[str, Any]) -> list[str]:
    """The literal env values of the pod's containers that must not appear in its log."""
    env: dict[str, str] = {}
    for container in (pod.get("spec") or {}).get("containers") or []:
        for var in container.get("env") or []:
            if isinstance(var.get("value"), str):
                env[str(var.get("name"))] = var["value"]
    return secrets_of(env)


@dataclass(frozen=True, slots=True)
class LogSource:
    """What reading a pod's log needs from the pod: its main container and what to mask."""

    container: str | None
    secrets: tuple[str, ...]

    @classmethod
    def of(cls, pod: Mapping[str, Any]) -> LogSource:
        return cls(_container(pod), tuple(_pod_secrets(pod)))


def _container(pod: Mapping[str, Any]) -> str | None:
    names = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
    if MAIN_CONTAINER in names:
        return MAIN_CONTAINER
    return str(names[0]) if names else None


class PodLogs:
    """Log reads for the pods of one namespace."""

    def __init__(self, core: client.CoreV1Api, namespace: str, timeout_s: float) -> None:
        self.core = core
        self.namespace = namespace
        self.timeout_s = timeout_s

    def _source(self, name: str) -> LogSource:
        try:
            response = self.core.read_namespaced_pod(
                name, self.namespace, _preload_content=False, _request_timeout=self.timeout_s
            )
        except ApiException as exc:
            if exc.status == 404:
                raise PodLogUnavailable(f"pod {name} not found") from None
            raise
        return LogSource.of(orjson.loads(response.data))  # type: ignore[attr-defined]

    def _open(self, name: str, source: LogSource, **query: Any) -> Any:
        try:
            return self.core.read_namespaced_pod_log(
                name,
                self.namespace,
                container=source.container,
                _preload_content=False,
                **query,
            )
        except ApiException as exc:
            if exc.status in (400, 404):  # waiting to start, or gone
                raise PodLogUnavailable(f"no log for pod {name}: {exc.reason}") from None
            raise

    def _read(self, name: str, tail_lines: int | None, source: LogSource | None) -> bytes:
        source = source or self._source(name)
        query: dict[str, Any] = {"_request_timeout": self.timeout_s}
        if tail_lines is not None:
            query["tail_lines"] = tail_lines
        response = self._open(name, source, **query)
        try:
            data: bytes = response.data
        finally:
            response.release_conn()
        return mask(data.decode(errors="replace"), source.secrets).encode()

    async def read(
        self, name: str, tail_lines: int | None = None, source: LogSource | None = None
    ) -> bytes:
        """The log as it is now (the last `tail_lines` lines); PodLogUnavailable if none.

        A caller that holds the pod passes its `source`, which saves reading the pod first."""
        return await asyncio.to_thread(self._read, name, tail_lines, source)

    async def follow(self, name: str, tail_lines: int | None = None) -> AsyncIterator[bytes]:
        """The log so far, then each new line until the container ends."""
        loop = asyncio.get_running_loop()
        source = await asyncio.to_thread(self._source, name)
        # the read timeout is the longest silence a followed log survives
        query: dict[str, Any] = {"follow": True, "_request_timeout": (10.0, FOLLOW_QUIET_S)}
        if tail_lines is not None:
            query["tail_lines"] = tail_lines
        response = await asyncio.to_thread(self._open, name, source, **query)
        chunks: asyncio.Queue[bytes | None] = asyncio.Queue()

        def pump() -> None:
            try:
                for chunk in response.stream(4096):
                    loop.call_soon_threadsafe(chunks.put_nowait, chunk)
            except Exception:  # the connection closed under us: the log ends here
                pass
            finally:
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(chunks.put_nowait, None)

        threading.Thread(target=pump, name=f"log-{name}", daemon=True).start()
        pending = b""
        try:
            while (chunk := await chunks.get()) is not None:
                lines, newline, rest = (pending + chunk).rpartition(b"\n")
                pending = rest
                if newline:
                    yield mask((lines + newline).decode(errors="replace"), source.secrets).encode()
            if pending:
                yield mask(pending.decode(errors="replace"), source.secrets).encode()
        finally:
            with contextlib.suppress(Exception):
                response.close()
            response.release_conn()
