"""The `pods/{name}/log` subresource: PodLogOptions parsed and answered like the kubelet does.

`container`, `follow`, `previous`, `tailLines`, `sinceSeconds`/`sinceTime`, `timestamps` and
`limitBytes` behave as on a real node; the errors are the kubelet's 400s, worded the same, so
`kubectl logs` prints what it prints against a cluster.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime

from aiohttp import web

from . import query
from .logs import ContainerLogs, LogBuffer, LogWindow
from .status import ApiError, JsonObj, bad_request

_PULL_FAILURES = {
    "ErrImagePull": "image can't be pulled",
    "ImagePullBackOff": "trying and failing to pull image",
}


def log_window(params: Mapping[str, str]) -> LogWindow:
    """The records a request wants; 400 for values apiserver's validation rejects."""
    tail = query.integer(params, "tailLines")
    since_seconds = query.integer(params, "sinceSeconds")
    limit = query.integer(params, "limitBytes")
    since_time = params.get("sinceTime")
    if tail is not None and tail < 0:
        raise bad_request(f"tailLines: Invalid value: {tail}: must be greater than or equal to 0")
    if since_seconds is not None and since_seconds < 1:
        raise bad_request(f"sinceSeconds: Invalid value: {since_seconds}: must be greater than 0")
    if limit is not None and limit < 1:
        raise bad_request(f"limitBytes: Invalid value: {limit}: must be greater than 0")
    if since_seconds is not None and since_time:
        raise bad_request("at most one of `sinceTime` or `sinceSeconds` may be specified")
    since_ns: int | None = None
    if since_seconds is not None:
        since_ns = time.time_ns() - since_seconds * 1_000_000_000
    elif since_time:
        since_ns = _parse_time(since_time)
    return LogWindow(
        tail_lines=tail,
        since_ns=since_ns,
        timestamps=query.flag(params, "timestamps"),
        limit_bytes=limit,
    )


def pick_buffer(
    pod: JsonObj, logs: Mapping[str, ContainerLogs], params: Mapping[str, str]
) -> LogBuffer:
    """The buffer the request reads: the named (or only) container, current or previous run."""
    name = container_name(pod, params.get("container"))
    pod_name = pod["metadata"]["name"]
    container_logs = logs.get(name)
    if query.flag(params, "previous"):
        if container_logs is None or container_logs.previous is None:
            raise bad_request(
                f'previous terminated container "{name}" in pod "{pod_name}" not found'
            )
        return container_logs.previous
    if container_logs is None:
        reason = _waiting_reason(pod, name)
        raise bad_request(f'container "{name}" in pod "{pod_name}" is waiting to start: {reason}')
    return container_logs.current


async def respond(request: web.Request, buffer: LogBuffer, window: LogWindow) -> web.StreamResponse:
    """The whole text at once, or (follow) a chunked stream until the container ends."""
    if not query.flag(request.query, "follow"):
        return web.Response(body=buffer.read(window), content_type="text/plain")
    response = web.StreamResponse(headers={"Content-Type": "text/plain"})
    await response.prepare(request)
    try:
        async for chunk in buffer.follow(window):
            await response.write(chunk)
        await response.write_eof()
    except ConnectionResetError:
        pass  # the client stopped following
    return response


def container_name(pod: JsonObj, requested: str | None) -> str:
    """The container a request names (an init container too), or the pod's only one; 400
    as apiserver words it."""
    names = [c["name"] for c in pod["spec"]["containers"]]
    inits = [c["name"] for c in pod["spec"].get("initContainers") or []]
    pod_name = pod["metadata"]["name"]
    if not requested:
        if len(names) > 1:
            choices = f"choose one of: [{' '.join(names)}]"
            if inits:
                choices += f" or one of the init containers: [{' '.join(inits)}]"
            raise bad_request(f"a container name must be specified for pod {pod_name}, {choices}")
        return str(names[0])
    if requested not in names and requested not in inits:
        raise bad_request(f"container {requested} is not valid for pod {pod_name}")
    return requested


def find_container(pod: JsonObj, name: str) -> JsonObj:
    """The spec of container `name`, an app or an init container (`container_name` checked)."""
    every = [*(pod["spec"].get("initContainers") or []), *pod["spec"]["containers"]]
    return next(c for c in every if c["name"] == name)


def container_statuses(pod: JsonObj) -> list[JsonObj]:
    """The status entries of all the pod's containers, init ones first."""
    status = pod.get("status") or {}
    return [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]


def _waiting_reason(pod: JsonObj, container: str) -> str:
    """The kubelet's words for a container that has no log yet."""
    reason = "ContainerCreating"
    for status in container_statuses(pod):
        if status["name"] == container:
            reason = str(status["state"].get("waiting", {}).get("reason", reason))
    return _PULL_FAILURES.get(reason, reason)


def _parse_time(text: str) -> int:
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise ApiError(
            400, "BadRequest", f'parsing time "{text}" as RFC 3339: cannot parse sinceTime'
        ) from None
    if at.tzinfo is None:
        raise bad_request(f'sinceTime "{text}" must carry a time zone (RFC 3339)')
    return int(at.timestamp() * 1_000_000_000)
