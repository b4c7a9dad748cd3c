"""Kafka clients built from settings, topic administration, and the batch-consume loop.

Every stage talks to Kafka through these factories so security options, client ids and
the at-least-once discipline (auto-commit off, commit after effects) live in one place.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaConnectionError, KafkaError

from pipeline.config import KafkaSettings, TopicSettings

log = logging.getLogger(__name__)

Batch = dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]


class BrokerUnreachable(ConnectionError):
    """Kafka did not answer at the configured bootstrap servers."""


def connection_options(kafka: KafkaSettings) -> dict[str, Any]:
    """Options every aiokafka client shares: servers, security, timeouts."""
    options: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers.split(","),
        "security_protocol": kafka.security_protocol,
        "request_timeout_ms": kafka.request_timeout_ms,
    }
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(
            cafile=str(kafka.ssl_cafile) if kafka.ssl_cafile else None
        )
        if kafka.ssl_certfile:
            context.load_cert_chain(
                str(kafka.ssl_certfile), str(kafka.ssl_keyfile) if kafka.ssl_keyfile else None
            )
        options["ssl_context"] = context
    if kafka.sasl_mechanism:
        options["sasl_mechanism"] = kafka.sasl_mechanism
        options["sasl_plain_username"] = kafka.sasl_username
        options["sasl_plain_password"] = (
            kafka.sasl_password.get_secret_value() if kafka.sasl_password else None
        )
    return options


def make_producer(kafka: KafkaSettings, client_id: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        **connection_options(kafka),
        client_id=f"{kafka.client_id}-{client_id}",
        acks="all",
        enable_idempotence=kafka.enable_idempotence,
        linger_ms=kafka.linger_ms,
        max_request_size=max(kafka.max_message_bytes * 2, 1_048_576),
    )


def group_timeouts(kafka: KafkaSettings, session_timeout_ms: int | None = None) -> dict[str, int]:
    """Session and heartbeat of a group member: the stage's own session if set, else kafka's.

    The heartbeat is at most a third of the session (Kafka's advice), so a member survives
    two lost heartbeats before the coordinator gives its partitions away.
    """
    session = session_timeout_ms or kafka.session_timeout_ms
    heartbeat = min(kafka.heartbeat_interval_ms or session, session // 3)
    return {"session_timeout_ms": session, "heartbeat_interval_ms": heartbeat}


def make_consumer(
    kafka: KafkaSettings,
    *topics: str,
    group_id: str | None,
    client_id: str,
    session_timeout_ms: int | None = None,
    follower: bool = False,
    **extra: Any,
) -> AIOKafkaConsumer:
    """An at-least-once consumer: auto-commit off, earliest offset, unless `extra` says else.

    Every consumer takes `fetch_max_wait_ms` from the settings: it bounds how long a hop can
    sit in a held fetch (the whole wait on the sandbox broker), so it is a latency setting;
    a `follower`, off the tasks' path, takes `follower_fetch_max_wait_ms` instead. Group
    members also take the session/heartbeat from `group_timeouts`.
    """
    wait_ms = kafka.follower_fetch_max_wait_ms if follower else kafka.fetch_max_wait_ms
    options: dict[str, Any] = {
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "fetch_max_wait_ms": wait_ms,
    }
    if group_id is not None:
        options |= group_timeouts(kafka, session_timeout_ms)
    return AIOKafkaConsumer(
        *topics,
        **connection_options(kafka),
        client_id=f"{kafka.client_id}-{client_id}",
        group_id=group_id,
        **(options | extra),
    )


@asynccontextmanager
async def started(client: Any, kafka: KafkaSettings) -> AsyncIterator[Any]:
    """Start a client, turning 'no broker' into BrokerUnreachable; always stop it."""
    try:
        await client.start()
    except KafkaConnectionError:
        await client.close() if isinstance(client, AIOKafkaAdminClient) else await client.stop()
        raise BrokerUnreachable(
            f"cannot reach Kafka at {kafka.bootstrap_servers} "
            "(is the broker running? set PIPELINE_KAFKA_BOOTSTRAP_SERVERS)"
        ) from None
    try:
        yield client
    finally:
        await client.close() if isinstance(client, AIOKafkaAdminClient) else await client.stop()


@asynccontextmanager
async def all_started(kafka: KafkaSettings, *clients: Any) -> AsyncIterator[None]:
    """Start every client in order (each stopped at the end); when one cannot reach Kafka,
    the ones not yet started are stopped too, so none is left unclosed."""
    async with AsyncExitStack() as stack:
        for i, client in enumerate(clients):
            try:
                await stack.enter_async_context(started(client, kafka))
            except BrokerUnreachable:
                for later in clients[i + 1 :]:
                    await later.stop()
                raise
        yield


async def send_all(
    producer: AIOKafkaProducer, messages: Sequence[tuple[str, bytes | None, bytes]]
) -> None:
    """Send (topic, key, value) messages and wait until the broker acknowledged all of them."""
    futures = [await producer.send(topic, value, key=key) for topic, key, value in messages]
    if futures:
        await asyncio.gather(*futures)


async def create_topics(kafka: KafkaSettings, topics: TopicSettings) -> list[str]:
    """Create the pipeline's topics if missing (with `TopicSettings.configs`); returns those
    created."""
    admin = AIOKafkaAdminClient(**connection_options(kafka), client_id=f"{kafka.client_id}-admin")
    async with started(admin, kafka):
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                name,
                topics.partitions,
                topics.replication_factor,
                topic_configs=topics.configs(name),
            )
            for name in topics.all_names()
            if name not in existing
        ]
        if wanted:
            try:
                await admin.create_topics(wanted)
            except KafkaError as exc:
                if "TopicAlreadyExists" not in type(exc).__name__:
                    raise
        return [t.name for t in wanted]


async def consume_batches(
    consumer: AIOKafkaConsumer,
    handle: Callable[[Batch], Awaitable[None]],
    stopping: asyncio.Event,
    *,
    max_records: int,
    timeout_ms: int = 200,
) -> None:
    """Fetch, handle, commit — until `stopping` is set; the batch in hand always finishes.

    `handle` must make the batch's effects durable before returning; only then are its
    offsets committed, so a crash at any point re-delivers rather than loses.
    """
    while not stopping.is_set():
        batch = await consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        if not batch:
            continue
        await handle(batch)
        offsets = {tp: records[-1].offset + 1 for tp, records in batch.items() if records}
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # Partitions moved to another member mid-batch: it re-reads from the last
            # commit, so these records are delivered again there (at-least-once).
            log.warning("commit after rebalance refused; records will be re-delivered: %s", exc)


async def fetch_highwaters(
    kafka: KafkaSettings, partitions: Iterable[TopicPartition], timeout_s: float = 30.0
) -> dict[TopicPartition, int]:
    """The log-end offset of each partition, as the fetch high-water reports it.

    ListOffsets (`end_offsets`) can understate the end on some brokers (Tansu 0.6 answers
    the last batch's base offset + 1), so one small fetch per partition asks the truth. It
    starts at that hint minus one, always a valid offset, so it returns little data.
    """
    wanted = list(partitions)
    if not wanted:
        return {}
    consumer = make_consumer(kafka, group_id=None, client_id="highwater")
    async with started(consumer, kafka):
        consumer.assign(wanted)
        starts = await consumer.beginning_offsets(wanted)
        hints = await consumer.end_offsets(wanted)
        for tp in wanted:
            consumer.seek(tp, max(starts[tp], hints[tp] - 1))
        async with asyncio.timeout(timeout_s):
            while pending := [tp for tp in wanted if consumer.highwater(tp) is None]:
                await consumer.getmany(*pending, timeout_ms=200, max_records=1)
        return {tp: int(consumer.highwater(tp)) for tp in wanted}


async def config_drift(
    kafka: KafkaSettings, topics: TopicSettings, names: Iterable[str]
) -> dict[str, dict[str, tuple[str | None, str]]]:
    """Per existing topic, the configs it would be created with that it does not have:
    name -> (what it has, what `TopicSettings.configs` wants). Topics are created once, so a
    setting changed later (say, the launch ledger's retention) shows here until an operator
    alters the topic with the cluster's own tools."""
    wanted = {name: topics.configs(name) for name in names}
    wanted = {name: configs for name, configs in wanted.items() if configs}
    if not wanted:
        return {}
    resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in wanted]
    admin = AIOKafkaAdminClient(**connection_options(kafka), client_id=f"{kafka.client_id}-admin")
    async with started(admin, kafka):
        responses = await admin.describe_configs(resources)
    drift: dict[str, dict[str, tuple[str | None, str]]] = {}
    for response in responses:
        for error_code, _, _, name, entries in response.resources:
            if error_code != 0:  # gone meanwhile, or not ours to read: nothing to compare
                continue
            have = {entry[0]: entry[1] for entry in entries}
            differ = {
                key: (have.get(key), value)
                for key, value in wanted.get(name, {}).items()
                if have.get(key) != value
            }
            if differ:
                drift[name] = differ
    return drift


async def topic_partitions(kafka: KafkaSettings, topic: str) -> list[TopicPartition]:
    """Every partition of `topic` (empty when it does not exist)."""
    consumer = make_consumer(kafka, group_id=None, client_id="metadata")
    async with started(consumer, kafka):
        await consumer.topics()  # refreshes the cluster metadata
        ids = consumer.partitions_for_topic(topic) or set()
        return [TopicPartition(topic, p) for p in sorted(ids)]


async def count_records(kafka: KafkaSettings, topic: str) -> int:
    """How many records `topic` holds (nothing is ever deleted from its start here)."""
    highwaters = await fetch_highwaters(kafka, await topic_partitions(kafka, topic))
    return sum(highwaters.values())
