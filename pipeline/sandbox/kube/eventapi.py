"""The core/v1 events API: what `kubectl describe pod` and `kubectl get events` read.

Events live in a store of their own (their resourceVersions are independent of the pods').
Reads go through `Collection`, so selectors such as `involvedObject.name=...`, watches and
Tables behave as for pods; clients may also create and delete events, as on a cluster.
"""

from __future__ import annotations

import random
import uuid
from typing import Any

from aiohttp import web

from .collection import Admit, Collection, Printer, json_response
from .faults import Faults
from .pods import rfc3339
from .selectors import EVENT_FIELD_PATHS
from .server import read_json
from .status import JsonObj, bad_request
from .store import PodStore
from .table import human_duration, parse_time

EVENTS = "/api/v1/namespaces/{namespace}/events"

EVENT_COLUMNS: list[JsonObj] = [
    {"name": name, "type": "string", "format": fmt, "priority": priority, "description": text}
    for name, fmt, priority, text in (
        ("Last Seen", "", 0, "The time at which the most recent occurrence of this event was "
         "recorded."),
        ("Type", "", 0, "Type of this event (Normal, Warning), new types could be added in the "
         "future"),
        ("Reason", "", 0, "This should be a short, machine understandable string that gives the "
         "reason for the transition into the object's current status."),
        ("Object", "", 0, "The object that this event is about."),
        ("Subobject", "", 1, "If referring to a piece of an object instead of an entire object, "
         "this string should contain a valid JSON/Go field access statement."),
        ("Source", "", 1, "The component reporting this event."),
        ("Message", "", 0, "A human-readable description of the status of this operation."),
        ("First Seen", "", 1, "The time at which the event was first recorded."),
        ("Count", "", 1, "The number of times this event has occurred."),
        ("Name", "name", 1, "Name must be unique within a namespace."),
    )
]  # fmt: skip


def event_row(event: JsonObj, now: float) -> list[Any]:
    """LAST SEEN TYPE REASON OBJECT SUBOBJECT SOURCE MESSAGE FIRST SEEN COUNT NAME."""
    involved = event.get("involvedObject") or {}
    source = event.get("source") or {}
    origin = ", ".join(v for v in (source.get("component"), source.get("host")) if v)
    return [
        _since(event.get("lastTimestamp") or event.get("eventTime"), now),
        event.get("type", ""),
        event.get("reason", ""),
        f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}",
        involved.get("fieldPath", ""),
        origin,
        str(event.get("message", "")).strip(),
        _since(event.get("firstTimestamp"), now),
        str(event.get("count", 1)),
        event["metadata"]["name"],
    ]


class EventApi:
    def __init__(self, store: PodStore, faults: Faults, admit: Admit, bookmark_interval: float):
        self.store = store
        self._admit = admit
        self._random = random.Random()
        self.events = Collection(
            store,
            faults,
            list_kind="EventList",
            printer=Printer(EVENT_COLUMNS, event_row),
            field_paths=EVENT_FIELD_PATHS,
            bookmark_interval=bookmark_interval,
        )

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/api/v1/events", self.list_events),
            web.get(EVENTS, self.list_events),
            web.post(EVENTS, self.create),
            web.get(EVENTS + "/{name}", self.get),
            web.delete(EVENTS + "/{name}", self.delete),
        ]

    async def list_events(self, request: web.Request) -> web.StreamResponse:
        return await self.events.list_or_watch(request, self._admit)

    async def get(self, request: web.Request) -> web.Response:
        await self._admit("get")
        return self.events.one(request, self.store.get(_key(request)))

    async def create(self, request: web.Request) -> web.Response:
        await self._admit("create")
        body = await read_json(request)
        if not isinstance(body, dict) or not isinstance(body.get("involvedObject"), dict):
            raise bad_request("an Event needs an involvedObject")
        namespace = request.match_info["namespace"]
        meta = dict(body.get("metadata") or {})
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise bad_request("name or generateName is required")
            meta["name"] = f"{meta['generateName']}{self._random.getrandbits(24):06x}"
        meta.update(namespace=namespace, uid=str(uuid.uuid4()), creationTimestamp=rfc3339())
        event = {**body, "kind": "Event", "apiVersion": "v1", "metadata": meta}
        return json_response(self.store.create(event), 201)

    async def delete(self, request: web.Request) -> web.Response:
        await self._admit("delete")
        return json_response(self.store.remove(_key(request)))


def _since(stamp: str | None, now: float) -> str:
    return human_duration(now - parse_time(stamp)) if stamp else "<unknown>"


def _key(request: web.Request) -> tuple[str, str]:
    return request.match_info["namespace"], request.match_info["name"]
