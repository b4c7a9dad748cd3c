"""Reading one resource's store over HTTP: get, list and watch, as JSON or as Tables.

Pods and events read alike (selectors, resourceVersion semantics, pagination, watch resume,
server-side printing), so both APIs delegate their read verbs here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from . import listing, table
from .faults import Faults
from .query import flag
from .selectors import FieldPaths, parse_selector
from .status import JsonObj
from .store import PodStore
from .watch import WatchRequest, WatchStream

Admit = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class Printer:
    """How `kubectl get` shows the resource: its Table columns and one row per object."""

    columns: Sequence[JsonObj]
    row: table.Row


def json_response(obj: Any, status: int = 200, warnings: Sequence[str] = ()) -> web.Response:
    response = web.Response(body=orjson.dumps(obj), status=status, content_type="application/json")
    for warning in warnings:  # RFC 7234 warn-code 299, as apiserver sends them
        response.headers.add("Warning", f"299 - {orjson.dumps(warning).decode()}")
    return response


class Collection:
    def __init__(
        self,
        store: PodStore,
        faults: Faults,
        *,
        list_kind: str,
        printer: Printer,
        field_paths: FieldPaths,
        bookmark_interval: float,
    ) -> None:
        self.store = store
        self._faults = faults
        self._list_kind = list_kind
        self._printer = printer
        self._field_paths = field_paths
        self._bookmark_interval = bookmark_interval
        self._watches: set[WatchStream] = set()

    def close_watches(self) -> None:
        for stream in self._watches:
            stream.close()

    def one(self, request: web.Request, obj: JsonObj) -> web.Response:
        """A GET answer: the object, or a one-row Table when kubectl asks for one."""
        if not wants_table(request):
            return json_response(obj)
        meta = {"resourceVersion": obj["metadata"]["resourceVersion"]}
        return json_response(self._table([obj], request, meta))

    async def list_or_watch(self, request: web.Request, admit: Admit) -> web.StreamResponse:
        namespace = request.match_info.get("namespace")
        query = dict(request.query)
        selector = parse_selector(
            query.get("labelSelector"), query.get("fieldSelector"), self._field_paths
        )
        if not flag(query, "watch"):
            await admit("list")
            found = listing.list_pods(self.store, namespace, selector, query, self._list_kind)
            if wants_table(request):
                return json_response(self._table(found["items"], request, found["metadata"]))
            return json_response(found)
        await admit("watch")
        watch = WatchRequest.from_query(namespace, selector, query)
        as_table = None
        if wants_table(request):
            include = table.include_object(query)

            def as_table(obj: JsonObj, headers: bool) -> JsonObj:
                columns, row = self._printer.columns, self._printer.row
                return table.table([obj], columns, row, include=include, headers=headers)

        stream = WatchStream(self.store, self._faults, watch, self._bookmark_interval, as_table)
        self._watches.add(stream)
        try:
            return await stream.serve(request)
        finally:
            self._watches.discard(stream)

    def _table(self, objs: list[JsonObj], request: web.Request, metadata: JsonObj) -> JsonObj:
        include = table.include_object(request.query)
        columns, row = self._printer.columns, self._printer.row
        return table.table(objs, columns, row, metadata=metadata, include=include)


def wants_table(request: web.Request) -> bool:
    return table.wants_table(request.headers.get("Accept", ""))
