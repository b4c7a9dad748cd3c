"""Which offset of a partition may be committed while requests finish out of order.

Creates run concurrently and retries finish late, so request 7 may be done while request 5
still waits for its retry. Committing 8 then would lose request 5 on a crash; the tracker
only ever offers the offset after the highest *contiguous* finished request.
"""

from __future__ import annotations

from collections import deque


class OffsetTracker:
    """Offsets of one partition, begun in fetch order and finished in any order."""

    def __init__(self) -> None:
        self._open: deque[int] = deque()
        self._known: set[int] = set()
        self._finished: set[int] = set()
        self._committable: int | None = None

    def begin(self, offset: int) -> None:
        """Record a fetched offset; offsets must be begun in increasing order."""
        if self._open and offset <= self._open[-1]:
            raise ValueError(f"offset {offset} begun after {self._open[-1]}")
        self._open.append(offset)
        self._known.add(offset)

    def finish(self, offset: int) -> None:
        """Mark an offset's effects durable; unknown offsets (e.g. after a revoke) are ignored."""
        if offset not in self._known:
            return
        self._finished.add(offset)
        while self._open and self._open[0] in self._finished:
            done = self._open.popleft()
            self._known.discard(done)
            self._finished.discard(done)
            self._committable = done + 1

    @property
    def committable(self) -> int | None:
        """The offset to commit (next to read), or None when nothing finished yet."""
        return self._committable

    @property
    def pending(self) -> int:
        return len(self._open)
