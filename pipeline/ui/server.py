"""The dashboard's aiohttp application: routes, safety headers, live events, actions.

Safe by default: pages are GETs that change nothing; actions are POSTs, refused unless
`ui.actions` is on, refused from another origin (no cross-site form can fire them), and
they need the API token when one is configured. Every asset is served from the package.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlencode, urlsplit

import aiohttp
from aiohttp import web

from pipeline import runtime
from pipeline.client import AsyncPipelineClient, UnknownTask
from pipeline.config import Settings
from pipeline.dlq import RedriveError
from pipeline.ui import pages
from pipeline.ui.context import API_ERRORS, CONTEXT, UiContext, static_dir, templates
from pipeline.ui.deadletters import LetterTail
from pipeline.ui.live import Feed

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
HEARTBEAT_S = 15.0
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


@web.middleware
async def safety(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Security headers on every answer; a POST must come from this dashboard's own pages."""
    if request.method == "POST" and not same_origin(request):
        raise web.HTTPForbidden(text="cross-origin request refused")
    response = await handler(request)
    response.headers.update(SECURITY_HEADERS)
    return response


def same_origin(request: web.Request) -> bool:
    """The browser says where a request came from; anything but this host is refused."""
    if request.headers.get("Sec-Fetch-Site") not in (None, "same-origin"):
        return False
    origin = request.headers.get("Origin")
    return origin is None or urlsplit(origin).netloc == request.host


def require_action(request: web.Request, token: str | None) -> None:
    """Actions on, and the configured token given (form field `token`)."""
    ctx = UiContext.of(request)
    if not ctx.actions:
        raise web.HTTPForbidden(text="actions are disabled (set PIPELINE_UI_ACTIONS=true)")
    expected = ctx.token
    if expected is not None and not hmac.compare_digest((token or "").encode(), expected.encode()):
        raise web.HTTPUnauthorized(text="a valid API token is required for this action")


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: the live feed's fragments, and a heartbeat comment when idle."""
    ctx = UiContext.of(request)
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    response.headers.update(SECURITY_HEADERS)
    await response.prepare(request)
    async with ctx.feed.listen() as queue:
        while True:
            try:
                message = await asyncio.wait_for(queue.get(), HEARTBEAT_S)
            except TimeoutError:
                message = b": heartbeat\n\n"
            try:
                await response.write(message)
            except (ConnectionResetError, aiohttp.ClientConnectionResetError):
                break
    return response


async def redrive(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    token = form.get("token")
    require_action(request, token if isinstance(token, str) else None)
    ctx = UiContext.of(request)
    places = []
    for value in form.getall("letter", []):
        partition, _, offset = value.partition(":") if isinstance(value, str) else ("", "", "")
        if not (partition.isdigit() and offset.isdigit()):
            raise web.HTTPBadRequest(text=f"not a dead letter place: {value!r}")
        places.append((int(partition), int(offset)))
    if not places:
        raise web.HTTPBadRequest(text="select at least one dead letter")
    try:
        count = await ctx.letters.redrive(places)
    except RedriveError as exc:
        raise web.HTTPConflict(text=str(exc)) from None
    raise web.HTTPSeeOther("/dead-letters?" + urlencode({"done": f"re-published {count}"}))


async def cancel(request: web.Request) -> web.StreamResponse:
    """Ask the reducer to cancel one try; the page shows the state once a stage ends it."""
    form = await request.post()
    token = form.get("token")
    require_action(request, token if isinstance(token, str) else None)
    ctx = UiContext.of(request)
    fields = {name: value for name, value in form.items() if isinstance(value, str)}
    key = pages.key_from(fields, with_try=True)
    reason = fields.get("reason", "").strip()[:500] or "cancelled from the dashboard"
    try:
        answer = await ctx.api.cancel(key, reason=reason, requested_by="dashboard")
    except UnknownTask:
        raise web.HTTPNotFound(text=f"no such try: {key}") from None
    except API_ERRORS as exc:
        raise web.HTTPBadGateway(text=f"the reducer API refused or failed: {exc}") from None
    if answer.accepted:
        done = f"cancel of try {key.try_number} requested"
    else:
        done = f"try {key.try_number} had already finished ({answer.state})"
    back = {k: fields[k] for k in ("dag_id", "task_id", "run_id", "map_index")}
    raise web.HTTPSeeOther("/task?" + urlencode({**back, "done": done}))


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def make_app(settings: Settings, api_url: str) -> web.Application:
    app = web.Application(middlewares=[safety])
    app.cleanup_ctx.append(lambda app: _lifetime(app, settings, api_url))
    app.router.add_get("/", pages.overview)
    app.router.add_get("/tasks", pages.tasks)
    app.router.add_get("/tasks/rows", pages.task_rows)
    app.router.add_get("/task", pages.task_detail)
    app.router.add_get("/task/try", pages.task_try)
    app.router.add_get("/task/log", pages.task_log)
    app.router.add_post("/task/cancel", cancel)
    app.router.add_get("/dead-letters", pages.dead_letters)
    app.router.add_post("/dead-letters/redrive", redrive)
    app.router.add_get("/stages", pages.stages)
    app.router.add_get("/events", events)
    app.router.add_get("/healthz", healthz)
    app.router.add_static("/static", static_dir())
    return app


async def _lifetime(app: web.Application, settings: Settings, api_url: str) -> AsyncIterator[None]:
    """The client session and the two background loops, for the app's lifetime."""
    secret = settings.reducer.api_token
    token = secret.get_secret_value() if secret else None
    async with aiohttp.ClientSession() as session, AsyncPipelineClient(api_url, token) as api:
        env = templates()
        letters = LetterTail(settings)
        interval = settings.ui.push_interval_s
        feed = Feed(api, lambda snapshot: pages.overview_fragments(ctx, snapshot), interval)
        ctx = UiContext(settings, session, api, feed, letters, env, token)
        app[CONTEXT] = ctx
        loops = [
            runtime.guard(ctx.feed.run(), "ui-feed"),
            runtime.guard(letters.run(), "ui-dead-letters"),
        ]
        try:
            yield
        finally:
            await runtime.cancel_and_wait(loops)


async def serve(settings: Settings, api_url: str) -> None:
    """Serve until cancelled (the CLI's Ctrl-C / SIGTERM)."""
    runner = web.AppRunner(make_app(settings, api_url), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.ui.host, settings.ui.port)
    await site.start()
    port = runner.addresses[0][1] if runner.addresses else settings.ui.port
    print(f"dashboard on http://{settings.ui.host}:{port} (reducer API {api_url})", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
