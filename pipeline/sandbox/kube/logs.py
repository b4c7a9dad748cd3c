"""Container logs as a kubelet keeps them: timestamped records, bounded, followable.

What a container writes is split into line records stamped with the time each line was
complete, as a CRI runtime writes its log file: the pieces of a line written separately are one
record, and a line without its newline yet is a (partial) record only once it is 16 KiB long
or the container ended. So
`sinceSeconds`/`sinceTime`, `timestamps` and `tailLines` answer from the records the way the
kubelet answers from its CRI log file. A restarted container's last run stays readable as
`previous`.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

LOG_LIMIT = 4 * 1024 * 1024  # bytes kept per container, newest win, as kubelet log rotation
PARTIAL_LIMIT = 16 * 1024  # containerd's longest line record: longer lines are split


@dataclass(frozen=True, slots=True)
class LogRecord:
    at_ns: int  # wall-clock nanoseconds when the bytes arrived
    data: bytes  # one line with its newline, or a partial line without one


@dataclass(frozen=True, slots=True)
class LogWindow:
    """Which records a read wants: the last `tail_lines`, none older than `since_ns`."""

    tail_lines: int | None = None
    since_ns: int | None = None
    timestamps: bool = False
    limit_bytes: int | None = None


class LogBuffer:
    """One run of one container: readable whole or by window, or followed as it grows."""

    def __init__(self, limit: int = LOG_LIMIT) -> None:
        self._records: deque[LogRecord] = deque()
        self._first = 0  # absolute index of _records[0]; grows as old records are dropped
        self._size = 0
        self._limit = limit
        self._unfinished = b""  # the start of a line whose newline has not come yet
        self.closed = False
        self._changed = asyncio.Event()

    def append(self, chunk: bytes) -> None:
        *complete, self._unfinished = (self._unfinished + chunk).split(b"\n")
        lines = [line + b"\n" for line in complete]  # only "\n" ends a line, as in CRI
        while len(self._unfinished) >= PARTIAL_LIMIT:
            lines.append(self._unfinished[:PARTIAL_LIMIT])
            self._unfinished = self._unfinished[PARTIAL_LIMIT:]
        self._add(lines)

    def close(self) -> None:
        self._add([self._unfinished] if self._unfinished else [])
        self._unfinished = b""
        self.closed = True
        self._wake()

    def _add(self, lines: list[bytes]) -> None:
        now = time.time_ns()
        for line in lines:
            self._records.append(LogRecord(now, line))
            self._size += len(line)
        while self._size > self._limit and self._records:
            self._size -= len(self._records.popleft().data)
            self._first += 1
        if lines:
            self._wake()

    def text(self, tail_lines: int | None = None) -> bytes:
        return self.read(LogWindow(tail_lines=tail_lines))

    def read(self, window: LogWindow) -> bytes:
        start = self._start(window)
        return _render(list(self._records)[start - self._first :], window, window.limit_bytes)

    async def follow(self, window: LogWindow) -> AsyncIterator[bytes]:
        """Yield the window's text, then every new record until the container ends."""
        left = window.limit_bytes
        next_index = self._start(window)
        while True:
            records = list(self._records)[max(next_index - self._first, 0) :]
            next_index = self._first + len(self._records)
            changed, closed = self._changed, self.closed  # taken with the records
            chunk = _render(records, window, left)
            if chunk:
                yield chunk
                if left is not None:
                    left -= len(chunk)
                    if left <= 0:
                        return
            if closed:
                return
            await changed.wait()

    def _start(self, window: LogWindow) -> int:
        """Absolute index of the first record the window shows."""
        records = self._records
        start = self._first
        if window.tail_lines is not None:
            start = self._first + max(len(records) - window.tail_lines, 0)
        if window.since_ns is not None:
            while start - self._first < len(records) and (
                records[start - self._first].at_ns < window.since_ns
            ):
                start += 1
        return start

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()


class ContainerLogs:
    """The current run's buffer, and the one `previous` reads (the status's lastState).

    As the kubelet does: once a run exits to be restarted it is `lastState`, so `previous`
    reads it, and so does a plain read until the next run starts.
    """

    def __init__(self) -> None:
        self.current = LogBuffer()
        self.previous: LogBuffer | None = None

    def exited(self) -> None:
        """The current run ended and will be restarted: it becomes `previous`."""
        self.current.close()
        self.previous = self.current

    def restart(self) -> LogBuffer:
        """A new run starts with an empty buffer."""
        self.current = LogBuffer()
        return self.current

    def close(self) -> None:
        self.current.close()


def rfc3339_nano(at_ns: int) -> str:
    """Go's time.RFC3339Nano in UTC: trailing zeros of the fraction trimmed."""
    seconds, nanos = divmod(at_ns, 1_000_000_000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    fraction = f"{nanos:09d}".rstrip("0")
    return f"{stamp}.{fraction}Z" if fraction else f"{stamp}Z"


def _render(records: list[LogRecord], window: LogWindow, limit: int | None) -> bytes:
    if window.timestamps:
        data = b"".join(rfc3339_nano(r.at_ns).encode() + b" " + r.data for r in records)
    else:
        data = b"".join(r.data for r in records)
    return data if limit is None else data[:limit]
