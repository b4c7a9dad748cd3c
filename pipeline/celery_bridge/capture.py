"""A command's output as the worker captures it: stdout and stderr interleaved, bounded.

The command writes into one pipe (stderr joined to stdout, so the order it printed in is
kept); a reader thread keeps the newest `max_bytes` bytes and, at most every
`flush_every_s`, hands the masked text to `store` (the live capture a followed log reads).
The final text goes into the completion record, from where the monitor publishes it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable

from pipeline import tasklogs

log = logging.getLogger(__name__)

Store = Callable[[bytes], None]


class Capture:
    def __init__(
        self,
        max_bytes: int,
        secrets: Iterable[str] = (),
        store: Store | None = None,
        flush_every_s: float = 0.25,
    ) -> None:
        self.max_bytes = max_bytes
        self.secrets = list(secrets)
        self._store = store
        self._flush_every_s = flush_every_s
        self._data = bytearray()
        self._dropped = 0
        self._lock = threading.Lock()
        self._flushed_at = 0.0
        self._reader: threading.Thread | None = None

    def append(self, chunk: bytes) -> None:
        with self._lock:
            self._data += chunk
            if len(self._data) > 2 * self.max_bytes:  # trim in steps, not on every chunk
                excess = len(self._data) - self.max_bytes
                del self._data[:excess]
                self._dropped += excess
        if self._store is not None and time.monotonic() - self._flushed_at >= self._flush_every_s:
            self.flush()

    def text(self) -> tuple[str, int]:
        """The masked newest `max_bytes` bytes, and how many older bytes were dropped."""
        with self._lock:
            kept, dropped = tasklogs.bounded(bytes(self._data), self.max_bytes)
            dropped += self._dropped
        return tasklogs.mask(kept.decode(errors="replace"), self.secrets), dropped

    def flush(self) -> None:
        self._flushed_at = time.monotonic()
        if self._store is None:
            return
        try:
            self._store(self.text()[0].encode())
        except Exception as exc:  # the live copy is a convenience; the final one still counts
            log.warning("live output not stored: %s", exc)

    def read_from(self, fd: int) -> None:
        """Copy everything from `fd` in a thread until its writers close it."""

        def pump() -> None:
            try:
                while chunk := os.read(fd, 65536):
                    self.append(chunk)
            finally:
                os.close(fd)

        self._reader = threading.Thread(target=pump, name="command-output", daemon=True)
        self._reader.start()

    def finish(self, timeout_s: float = 5.0) -> None:
        """Wait for the reader to see the end of the output, then store the final text."""
        if self._reader is not None:
            self._reader.join(timeout_s)
        self.flush()
