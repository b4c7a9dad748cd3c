"""The admin endpoint, `/_sandbox/...`: change faults and disrupt pods while clients run.

GET    /_sandbox/faults        current FaultConfig as JSON
PUT    /_sandbox/faults        replace it (fields as FaultConfig)
PATCH  /_sandbox/faults        merge some fields (JSON merge patch)
DELETE /_sandbox/faults        back to no faults
POST   /_sandbox/namespaces/{ns}/pods/{name}/oom-kill | /evict
GET    /_sandbox/stats         request counters, concurrency and running-pod peaks
"""

from __future__ import annotations

import dataclasses

import orjson
from aiohttp import web

from .collection import json_response
from .faults import FaultConfig, Faults
from .kubelet import Kubelet
from .patch import merge_patch
from .server import ServerStats
from .status import ApiError, bad_request

PREFIX = "/_sandbox"


def admin_routes(faults: Faults, kubelet: Kubelet, stats: ServerStats) -> list[web.RouteDef]:
    async def get_faults(_: web.Request) -> web.Response:
        return json_response(faults.config.to_json())

    async def put_faults(request: web.Request) -> web.Response:
        faults.replace(_config(await request.read()))
        return json_response(faults.config.to_json())

    async def patch_faults(request: web.Request) -> web.Response:
        changes = _decode(await request.read())
        faults.replace(_config(orjson.dumps(merge_patch(faults.config.to_json(), changes))))
        return json_response(faults.config.to_json())

    async def reset_faults(_: web.Request) -> web.Response:
        faults.reset()
        return json_response(faults.config.to_json())

    async def disrupt(request: web.Request) -> web.Response:
        action = request.match_info["action"]
        if action not in ("oom-kill", "evict"):
            raise ApiError(404, "NotFound", f"unknown action {action!r}")
        key = request.match_info["namespace"], request.match_info["name"]
        kubelet.disrupt(key, "oom" if action == "oom-kill" else "evict")
        return json_response({"namespace": key[0], "name": key[1], "action": action})

    async def get_stats(_: web.Request) -> web.Response:
        return json_response(
            {"server": dataclasses.asdict(stats), "kubelet": dataclasses.asdict(kubelet.stats)}
        )

    faults_path = PREFIX + "/faults"
    return [
        web.get(faults_path, get_faults),
        web.put(faults_path, put_faults),
        web.patch(faults_path, patch_faults),
        web.delete(faults_path, reset_faults),
        web.post(PREFIX + "/namespaces/{namespace}/pods/{name}/{action}", disrupt),
        web.get(PREFIX + "/stats", get_stats),
    ]


def _decode(raw: bytes) -> object:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"faults must be JSON: {exc}") from None


def _config(raw: bytes) -> FaultConfig:
    try:
        return FaultConfig.from_json(_decode(raw))
    except ValueError as exc:
        raise bad_request(str(exc)) from None
