"""Faust's Kafka transport with the project's consumer fetch wait.

Faust's aiokafka driver builds its worker consumer with a fixed `fetch_max_wait_ms=1500`
and no setting to change it. Real Kafka answers a fetch as soon as data is there, so the
constant only costs idle time; the sandbox broker holds every fetch for the full wait, so
there every event reached the reducer ~0.75 s late on average (and 1.5 s at worst). The
consumer keeps everything faust gave it except that one value, taken from
`kafka.fetch_max_wait_ms` like every other consumer of the pipeline.
"""

from __future__ import annotations

from typing import Any

import aiokafka
from faust.transport.drivers import aiokafka as faust_aiokafka

from pipeline.config import KafkaSettings


def transport_for(kafka: KafkaSettings, *args: Any) -> faust_aiokafka.Transport:
    """Faust's aiokafka Transport (built from `args`) whose consumer waits as configured."""
    wait_ms = kafka.fetch_max_wait_ms

    class _Thread(faust_aiokafka.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
            consumer = super()._create_worker_consumer(transport)
            # Read by the consumer's start() when it builds its Fetcher; nothing else sets it.
            consumer._fetch_max_wait_ms = wait_ms
            return consumer

    class _Consumer(faust_aiokafka.Consumer):
        def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
            return _Thread(self, loop=self.loop, beacon=self.beacon)

    class FetchWaitTransport(faust_aiokafka.Transport):
        Consumer = _Consumer

    return FetchWaitTransport(*args)
