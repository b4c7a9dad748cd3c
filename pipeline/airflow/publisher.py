"""Publishing task requests from the scheduler's thread without blocking its loop.

Airflow calls the executor synchronously from the scheduler loop; a broker that is slow or
gone must not stall scheduling. So requests go to an aiokafka producer on an event loop in a
thread of its own: `publish` returns at once, each send is retried with backoff, and its
outcome (sent, or why it failed for good) is collected by the executor's next `sync`, which
fails the task back to Airflow instead of leaving it queued forever.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
from collections.abc import Hashable
from typing import Final

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from pipeline.config import KafkaSettings
from pipeline.kafka import make_producer

log = logging.getLogger(__name__)

CLIENT_ID: Final = "airflow-executor"

Outcome = tuple[Hashable, str | None]
"""(the caller's token, None when the broker acknowledged it, else why it failed)."""


class RequestPublisher:
    """One producer on a background event loop; `publish` is thread-safe and never blocks."""

    def __init__(
        self, kafka: KafkaSettings, topic: str, *, max_retries: int, backoff_s: float
    ) -> None:
        self.kafka = kafka
        self.topic = topic
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="pipeline-publisher", daemon=True
        )
        self._outcomes: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
        self._pending: set[concurrent.futures.Future[None]] = set()
        self._lock = threading.Lock()
        self._producer: AIOKafkaProducer | None = None
        self._starting: asyncio.Lock | None = None

    def start(self) -> None:
        self._thread.start()

    def publish(self, token: Hashable, key: bytes, value: bytes) -> None:
        """Send in the background; the outcome shows up in `outcomes()`."""
        future = asyncio.run_coroutine_threadsafe(self._send(token, key, value), self._loop)
        with self._lock:
            self._pending.add(future)
        future.add_done_callback(self._forget)

    def outcomes(self) -> list[Outcome]:
        """Every outcome since the last call."""
        drained: list[Outcome] = []
        while True:
            try:
                drained.append(self._outcomes.get_nowait())
            except queue.Empty:
                return drained

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def flush(self, timeout_s: float) -> bool:
        """Wait until every publish so far has an outcome; False when the timeout came first."""
        with self._lock:
            waiting = list(self._pending)
        _, not_done = concurrent.futures.wait(waiting, timeout=timeout_s)
        return not not_done

    def close(self, timeout_s: float) -> None:
        """Wait up to `timeout_s` for pending publishes, then stop the producer and the loop."""
        if not self._thread.is_alive():
            return
        self.flush(timeout_s)
        with self._lock:
            for future in self._pending:
                future.cancel()
        stopped = asyncio.run_coroutine_threadsafe(self._stop_producer(), self._loop)
        try:
            stopped.result(timeout=max(timeout_s, 1.0))
        except (concurrent.futures.TimeoutError, KafkaError) as exc:
            log.warning("the request producer did not stop cleanly: %s", exc)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5.0)

    def _forget(self, future: concurrent.futures.Future[None]) -> None:
        with self._lock:
            self._pending.discard(future)

    async def _send(self, token: Hashable, key: bytes, value: bytes) -> None:
        delay = self.backoff_s
        error = "not attempted"
        for attempt in range(self.max_retries + 1):
            try:
                producer = await self._ready_producer()
                await (await producer.send(self.topic, value, key=key))
            except (KafkaError, OSError) as exc:
                error = f"{type(exc).__name__}: {exc}"
                log.warning("publish of %s failed (attempt %d): %s", token, attempt + 1, error)
                if attempt < self.max_retries:
                    await asyncio.sleep(delay)
                    delay *= 2
                continue
            self._outcomes.put((token, None))
            return
        attempts = self.max_retries + 1
        self._outcomes.put((token, f"publish to {self.topic} failed {attempts} times: {error}"))

    async def _ready_producer(self) -> AIOKafkaProducer:
        """The started producer, started on first use (and again after a failed start)."""
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._producer is None:
                producer = make_producer(self.kafka, CLIENT_ID)
                try:
                    await producer.start()
                except BaseException:
                    await producer.stop()
                    raise
                self._producer = producer
            return self._producer

    async def _stop_producer(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()
