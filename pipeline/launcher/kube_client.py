"""The launcher's few Kubernetes calls, through the official client, off the event loop.

The client is blocking, so each call runs in a thread pool sized to `max_concurrent_creates`:
the pool is the limit on API calls in flight. Responses are read raw (`_preload_content=False`)
because the launcher needs a status code and a field or two, never a V1Pod object. Failures
become LaunchErrors that say whether retrying can help; urllib3's own retries are off so the
launcher's backoff (which honours Retry-After) is the only one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from enum import StrEnum
from typing import Any, Final, TypeVar

import orjson
import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from pipeline.config import KubeSettings
from pipeline.kube import client_configuration
from pipeline.launcher import metrics
from pipeline.launcher.errors import LaunchError, PodRejected, RetryLater
from pipeline.launcher.merge import JsonObj
from pipeline.messages import CancelInfo, TaskKey, epoch_s
from pipeline.podlogs import PodLogs, PodLogUnavailable
from pipeline.pods import CANCEL_ANNOTATION, key_from_annotations

T = TypeVar("T")


class PodEnd(StrEnum):
    """What ending a cancelled task's pod found."""

    ENDED = "ended"
    FINISHED = "finished"
    ABSENT = "absent"


TERMINAL_PHASES: Final = frozenset({"Succeeded", "Failed"})
_RETRIABLE_STATUS: Final = frozenset({401, 408, 429})
_LIST_PAGE: Final = 500
_JSON_HEADERS: Final = {"Accept": "application/json", "Content-Type": "application/json"}


def classify(exc: Exception) -> LaunchError:
    """What an API failure means for the task: fail it now, or retry later."""
    if isinstance(exc, ApiException):
        status = int(exc.status or 0)
        reason = f"{status} {exc.reason or ''}: {_status_message(exc.body)}".strip(": ")
        if status in _RETRIABLE_STATUS or status >= 500 or status == 0:
            return RetryLater(reason, _retry_after(exc.headers))
        if status == 403 and "exceeded quota" in reason:
            return RetryLater(reason)
        return PodRejected(reason)
    return RetryLater(f"{type(exc).__name__}: {exc}")


class PodApi:
    """Create, read, list and end the project's pods in one namespace."""

    def __init__(self, kube: KubeSettings, concurrency: int) -> None:
        self.namespace = kube.namespace
        self._timeout = kube.request_timeout_s
        self._api_client = client.ApiClient(client_configuration(kube, concurrency))
        self._core = client.CoreV1Api(self._api_client)
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="kube-api")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._api_client.close()  # type: ignore[no-untyped-call]

    async def create(self, pod: JsonObj) -> bool:
        """True when created, False when it already existed (409); else a LaunchError."""
        try:
            await self._call("create", self._create_sync, pod)
        except LaunchError:
            raise
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise classify(exc) from None
        return True

    async def phase(self, name: str) -> str | None:
        """The pod's phase, or None when there is no such pod."""
        try:
            body = await self._call("get", self._get_sync, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise classify(exc) from None
        phase: str | None = (body.get("status") or {}).get("phase")
        return phase or "Pending"

    async def end(self, name: str, cancel: CancelInfo, grace_s: int | None) -> PodEnd:
        """End a cancelled task's pod: annotate it with the cancel (so the watcher reports its
        end as `cancelled`), then delete it with a grace period. Whether it was ended, had
        finished on its own, or was not there."""
        try:
            body = await self._call("get", self._get_sync, name)
        except ApiException as exc:
            if exc.status == 404:
                return PodEnd.ABSENT
            raise classify(exc) from None
        if (body.get("status") or {}).get("phase") in TERMINAL_PHASES:
            return PodEnd.FINISHED
        try:
            await self._call("patch", self._annotate_sync, name, cancel)
            await self._call("delete", self._delete_sync, name, grace_s)
        except ApiException as exc:
            if exc.status == 404:
                return PodEnd.ABSENT
            raise classify(exc) from None
        return PodEnd.ENDED

    async def log_tail(self, name: str, max_bytes: int) -> bytes | None:
        """The newest output of a pod about to be deleted (masked), or None if it has none."""
        logs = PodLogs(self._core, self.namespace, self._timeout)
        try:  # every line is at least a byte: this many lines hold the newest max_bytes
            return await logs.read(name, tail_lines=max_bytes)
        except (PodLogUnavailable, ApiException, urllib3.exceptions.HTTPError, OSError):
            return None

    async def active_tasks(
        self, selector: str, *, pending_since: float | None = None
    ) -> set[TaskKey]:
        """Task keys of selected pods that have not finished (Airflow's adoption scan), but
        for pods still Pending that were created before `pending_since` (epoch seconds)."""
        keys: set[TaskKey] = set()
        token: str | None = None
        while True:
            try:
                page = await self._call("list", self._list_sync, selector, token)
            except ApiException as exc:
                raise classify(exc) from None
            for item in page.get("items") or []:
                phase = (item.get("status") or {}).get("phase")
                if phase in TERMINAL_PHASES or (
                    phase == "Pending" and _created_before(item, pending_since)
                ):
                    continue
                key = key_from_annotations((item.get("metadata") or {}).get("annotations"))
                if key is not None:
                    keys.add(key)
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return keys

    async def _call(self, verb: str, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, _timed, verb, fn, *args)

    def _create_sync(self, pod: JsonObj) -> None:
        """POST the pod through the client's own request path (its URL, headers, auth and
        connection pool), skipping what `create_namespaced_pod` adds for an API-form dict:
        argument validation into a V1Pod and `sanitize_for_serialization` back, which cost
        more CPU than the HTTP exchange itself."""
        if not hasattr(self._api_client, "param_serialize"):
            self._create_sync_legacy(pod)
            return
        method, url, headers, _, _ = self._api_client.param_serialize(  # type: ignore[no-untyped-call]
            "POST",
            "/api/v1/namespaces/{namespace}/pods",
            path_params={"namespace": self.namespace},
            header_params=dict(_JSON_HEADERS),
            auth_settings=["BearerToken"],
        )
        call_api: Any = self._api_client.call_api  # its signature differs across client versions
        response: urllib3.BaseHTTPResponse = call_api(
            method, url, headers, body=pod, _request_timeout=self._timeout
        ).response
        try:
            body = response.data  # read whole, so the connection can be reused
            if not 200 <= response.status <= 299:
                raise ApiException(http_resp=response, body=body.decode(errors="replace"))
        finally:
            response.release_conn()

    def _create_sync_legacy(self, pod: JsonObj) -> None:
        """The same POST on kubernetes clients before 37 (no `param_serialize`), which is what
        Airflow's cncf.kubernetes provider pins: their `call_api` raises ApiException itself."""
        call_api: Any = self._api_client.call_api  # its signature differs across client versions
        response: urllib3.BaseHTTPResponse = call_api(
            "/api/v1/namespaces/{namespace}/pods",
            "POST",
            path_params={"namespace": self.namespace},
            header_params=dict(_JSON_HEADERS),
            body=pod,
            auth_settings=["BearerToken"],
            response_types_map={},
            _preload_content=False,
            _request_timeout=self._timeout,
        )
        try:
            _ = response.data
        finally:
            response.release_conn()

    def _get_sync(self, name: str) -> JsonObj:
        response = self._core.read_namespaced_pod(
            name, self.namespace, _preload_content=False, _request_timeout=self._timeout
        )
        return _json(response)

    def _annotate_sync(self, name: str, cancel: CancelInfo) -> None:
        patch = {"metadata": {"annotations": {CANCEL_ANNOTATION: orjson.dumps(cancel).decode()}}}
        response = self._core.patch_namespaced_pod(
            name,
            self.namespace,
            patch,
            _content_type="application/merge-patch+json",
            _preload_content=False,
            _request_timeout=self._timeout,
        )
        _json(response)

    def _delete_sync(self, name: str, grace_s: int | None) -> None:
        response = self._core.delete_namespaced_pod(
            name,
            self.namespace,
            grace_period_seconds=grace_s,
            _preload_content=False,
            _request_timeout=self._timeout,
        )
        _json(response)

    def _list_sync(self, selector: str, token: str | None) -> JsonObj:
        response = self._core.list_namespaced_pod(
            self.namespace,
            label_selector=selector,
            limit=_LIST_PAGE,
            _continue=token,
            _preload_content=False,
            _request_timeout=self._timeout,
        )
        return _json(response)


def _timed(verb: str, fn: Callable[..., T], *args: Any) -> T:
    """Run one blocking call, observing its latency; transport errors become RetryLater."""
    started = time.perf_counter()
    try:
        return fn(*args)
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise classify(exc) from None
    finally:
        metrics.API_SECONDS.labels(verb).observe(time.perf_counter() - started)


def _json(response: Any) -> JsonObj:
    try:
        loaded: JsonObj = orjson.loads(response.read())
        return loaded
    finally:
        response.release_conn()


def _status_message(body: Any) -> str:
    """The `message` of a Kubernetes Status body, or the body itself (shortened)."""
    if not body:
        return ""
    try:
        message = orjson.loads(body).get("message")
    except (orjson.JSONDecodeError, AttributeError):
        message = None
    return str(message or body)[:1000]


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers else None
    try:
        return max(float(value), 0.0) if value is not None else None
    except ValueError:
        return None


def _created_before(pod: dict[str, Any], before_s: float | None) -> bool:
    if before_s is None:
        return False
    created = epoch_s((pod.get("metadata") or {}).get("creationTimestamp"))
    return created is not None and created < before_s
