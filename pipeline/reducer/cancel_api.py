"""`POST /tasks/{dag}/{task}/{run}/{map_index}/{try_number}/cancel`: a cancel request.

The API does not end anything itself: it checks that the try exists and is not finished,
then publishes a TaskControl on the control topic under the task's partition key, where the
stage holding the task's effect picks it up in order with the task's own messages. So the
answer is 202 (accepted, not done): the state turns `cancelled` once that stage reports it.

    202 {"accepted": true, "control_id"}   a control was published
    200 {"accepted": false, "state"}       the try had already finished: nothing to do
    404                                    the reducer knows no such try
    401                                    `reducer.api_token` is set and the bearer differs
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web
from faust.web import View

from pipeline.messages import TaskKey, encode, make_control
from pipeline.reducer.fold import is_terminal, state_key
from pipeline.reducer.owner import NoOwner, forward, owner_url

if TYPE_CHECKING:
    from pipeline.reducer.app import Reducer

CANCEL_PATH = "/tasks/{dag}/{task}/{run}/{map_index}/{try_number}/cancel"
MAX_BODY = 16 * 1024


def json_answer(body: dict[str, Any], status: int, **headers: str) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", headers=headers
    )


def authorized(reducer: Reducer, request: web.Request) -> bool:
    """True when no token is configured, or the request carries `Bearer <token>`."""
    token = reducer.settings.reducer.api_token
    if token is None:
        return True
    given = request.headers.get("Authorization", "")
    expected = f"Bearer {token.get_secret_value()}"
    return hmac.compare_digest(given.encode(), expected.encode())


def path_key(match: dict[str, str]) -> TaskKey:
    """The task key in a URL; ValueError when map_index or try_number is not an integer."""
    return TaskKey(
        match["dag"], match["task"], match["run"], int(match["map_index"]), int(match["try_number"])
    )


async def cancel_body(request: web.Request) -> tuple[str, str]:
    """`reason` and `requested_by` from the JSON body (both optional); ValueError if bad."""
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise ValueError(f"body larger than {MAX_BODY} bytes")
    body = orjson.loads(raw) if raw.strip() else {}
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    reason, by = body.get("reason", ""), body.get("requested_by", "api")
    if not isinstance(reason, str) or not isinstance(by, str) or not by:
        raise ValueError("reason and requested_by must be strings (requested_by not empty)")
    return reason, by


def register(reducer: Reducer) -> None:
    async def cancel(request: web.Request, match: dict[str, str]) -> web.StreamResponse:
        if not authorized(reducer, request):
            return json_answer(
                {"error": "a valid bearer token is required"}, 401, **{"WWW-Authenticate": "Bearer"}
            )
        try:
            key = path_key(match)
        except ValueError:
            return json_answer({"error": "map_index and try_number must be integers"}, 400)
        try:
            if (dest := owner_url(reducer, key)) is not None:
                return await forward(reducer, dest, request)
        except NoOwner as exc:
            return json_answer({"error": str(exc)}, 503)
        try:
            reason, requested_by = await cancel_body(request)
        except (ValueError, orjson.JSONDecodeError) as exc:
            return json_answer({"error": f"bad request body: {exc}"}, 400)
        state = reducer.state_of(state_key(key.to_wire()))
        if state is None:
            return json_answer({"error": f"unknown task {key}"}, 404)
        if is_terminal(state["state"]):
            return json_answer({"accepted": False, "state": state["state"]}, 200)
        control = make_control(key, reason, requested_by)
        await reducer.publish(reducer.topics.control, key.partition_key, encode(control))
        return json_answer({"accepted": True, "control_id": control["control_id"]}, 202)

    class CancelView(View):
        async def post(self, request: Any, **match: str) -> Any:
            return await cancel(request, match)

    reducer.app.page(CANCEL_PATH, name="task_cancel")(CancelView)
