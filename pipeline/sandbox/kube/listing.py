"""List semantics: resourceVersion / resourceVersionMatch, and limit/continue pagination.

A list's `metadata.resourceVersion` is the point a watch resumes from. Later pages of a
paginated list are served from the first page's snapshot, rebuilt from the event history,
so they are consistent; once that history is compacted the token is 410 Expired.
"""

from __future__ import annotations

import base64
import binascii

import orjson

from .selectors import PodSelector
from .status import ApiError, JsonObj, bad_request, expired
from .store import Key, PodStore


def list_pods(
    store: PodStore,
    namespace: str | None,
    selector: PodSelector,
    query: dict[str, str],
    kind: str = "PodList",
) -> JsonObj:
    limit = _limit(query.get("limit"))
    token = query.get("continue")
    if token:
        list_rv, after = _decode_token(token)
        items = _from_snapshot(store, list_rv, namespace, selector, after)
    else:
        list_rv = _list_rv(store, query.get("resourceVersion"), query.get("resourceVersionMatch"))
        if list_rv == store.rv:
            items = store.select(namespace, selector)
        else:
            items = _from_snapshot(store, list_rv, namespace, selector, None)
    metadata: JsonObj = {"resourceVersion": str(list_rv)}
    if limit is not None and len(items) > limit:
        items = items[:limit]
        last = items[-1]["metadata"]
        metadata["continue"] = _encode_token(list_rv, (last.get("namespace", ""), last["name"]))
    return {"kind": kind, "apiVersion": "v1", "metadata": metadata, "items": items}


def _list_rv(store: PodStore, rv: str | None, match: str | None) -> int:
    """The resourceVersion the list is served at, per the API's resourceVersionMatch rules."""
    if match and not rv:
        raise bad_request("resourceVersionMatch is forbidden unless resourceVersion is provided")
    if match not in (None, "", "Exact", "NotOlderThan"):
        raise bad_request(f'resourceVersionMatch: Unsupported value: "{match}"')
    if not rv or rv == "0":
        if match == "Exact":
            raise bad_request('resourceVersionMatch "Exact" is forbidden for resourceVersion "0"')
        return store.rv
    if not rv.isdigit():
        raise bad_request(f"invalid resource version: {rv!r}")
    wanted = int(rv)
    if wanted > store.rv:
        raise _too_large(wanted, store.rv)
    return wanted if match == "Exact" else store.rv


def _from_snapshot(
    store: PodStore, rv: int, namespace: str | None, selector: PodSelector, after: Key | None
) -> list[JsonObj]:
    try:
        state = store.snapshot_at(rv)
    except ApiError:
        raise expired(
            "The provided continue parameter is too old to display a consistent list result. "
            "You can start a new list without the continue parameter."
            if after is not None
            else f"too old resource version: {rv} ({store.compacted_rv})"
        ) from None
    return [
        pod
        for key, pod in state.items()
        if (namespace is None or key[0] == namespace)
        and (after is None or key > after)
        and selector.matches(pod)
    ]


def _limit(text: str | None) -> int | None:
    if not text:
        return None
    if not text.isdigit():
        raise bad_request("limit must be a non-negative integer")
    return int(text) or None


def _encode_token(rv: int, after: Key) -> str:
    raw = orjson.dumps({"rv": rv, "after": list(after)})
    return base64.urlsafe_b64encode(raw).decode()


def _decode_token(token: str) -> tuple[int, Key]:
    try:
        data = orjson.loads(base64.urlsafe_b64decode(token.encode()))
        return int(data["rv"]), (str(data["after"][0]), str(data["after"][1]))
    except (binascii.Error, orjson.JSONDecodeError, KeyError, IndexError, TypeError, ValueError):
        raise bad_request("continue key is not valid") from None


def _too_large(wanted: int, current: int) -> ApiError:
    cause = {"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}
    return ApiError(
        504,
        "Timeout",
        f"Too large resource version: {wanted}, current: {current}",
        details={"causes": [cause], "retryAfterSeconds": 1},
        retry_after=1,
    )
