"""What every dashboard handler shares: settings, the API client, the feed, the templates."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Any

import aiohttp
import jinja2
import orjson
from aiohttp import web

from pipeline.client import ApiError, ApiUnavailable, AsyncPipelineClient
from pipeline.config import Settings
from pipeline.ui.deadletters import LetterTail
from pipeline.ui.live import Feed

API_ERRORS = (ApiUnavailable, ApiError, TimeoutError)
"""What a call to the reducer API can fail with; pages show it instead of failing."""


def templates() -> jinja2.Environment:
    """Autoescaping for every template: a message's `<script>` is shown, never run."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("pipeline.ui", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["ms"] = format_ms
    env.filters["when"] = format_when
    return env


def format_ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f} ms" if value < 10_000 else f"{value / 1000:.1f} s"


def format_when(value: str | None) -> str:
    """A wire timestamp shortened for a table cell (the full one goes in a title)."""
    if not value:
        return "-"
    return value.replace("T", " ")[:23]


def static_dir() -> str:
    return str(resources.files("pipeline.ui") / "static")


@dataclass
class UiContext:
    settings: Settings
    session: aiohttp.ClientSession
    api: AsyncPipelineClient
    feed: Feed
    letters: LetterTail
    env: jinja2.Environment
    token: str | None = None

    @classmethod
    def of(cls, request: web.Request) -> UiContext:
        return request.app[CONTEXT]

    @property
    def actions(self) -> bool:
        return self.settings.ui.actions

    def render(self, name: str, **values: Any) -> str:
        return str(self.env.get_template(name).render(**values))

    def fragment(self, name: str, **values: Any) -> web.Response:
        return web.Response(text=self.render(name, **values), content_type="text/html")

    def page(
        self, name: str, request: web.Request, status: int = 200, **values: Any
    ) -> web.Response:
        html = self.render(name, path=request.path, actions=self.actions, **values)
        return web.Response(text=html, content_type="text/html", status=status)

    @staticmethod
    def json(value: Any) -> str:
        return orjson.dumps(value).decode()


CONTEXT = web.AppKey("ui", UiContext)
