"""Injectable faults: what a flaky or overloaded cluster does to its clients.

`FaultConfig` is plain data (set at start, replaced or merged through the admin endpoint);
`Faults` applies it: the API server asks `admit(verb)` before each request, the watch handler
asks `take_expiry()`, and the kubelet asks about images.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, Literal, TypeVar

from .status import ApiError, server_error, too_many_requests

VERBS = ("create", "get", "list", "watch", "update", "patch", "delete", "deletecollection", "log")
ImageFault = Literal["stuck", "backoff"]
Disruption = Literal["oom", "evict"]
T = TypeVar("T")


@dataclass
class ErrorRule:
    """Fail a share of one verb's requests with `code` (429, 500, 503, ...; 403 plays an
    RBAC that does not grant the verb)."""

    rate: float = 1.0
    code: int = 503
    count: int | None = None  # injections left; None means no limit
    retry_after: int = 1  # seconds, sent as Retry-After with 429 and 503


@dataclass
class FaultConfig:
    latency_seconds: float = 0.0  # added before every API request is answered
    errors: dict[str, ErrorRule] = field(default_factory=dict)  # by verb, see VERBS
    stuck_pending_images: str | None = None  # glob; such pods stay ContainerCreating
    image_pull_backoff_images: str | None = None  # glob; ErrImagePull then ImagePullBackOff
    oom_kill_images: str | None = None  # glob; running containers get OOMKilled
    evict_images: str | None = None  # glob; running pods get evicted
    disruption_after_seconds: float = 0.0  # delay from Running to the OOM kill / eviction
    watch_drop_after_events: int | None = None  # close every watch stream after N events
    expire_next_watches: int = 0  # the next N watches get a 410 Expired ERROR event

    @classmethod
    def from_json(cls, data: Any) -> FaultConfig:
        """Build from admin/CLI JSON; ValueError names the offending field."""
        if not isinstance(data, dict):
            raise ValueError("faults must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        values = dict(data)
        values["errors"] = {
            verb: _error_rule(verb, rule) for verb, rule in (data.get("errors") or {}).items()
        }
        try:
            return cls(**values)
        except TypeError as exc:
            raise ValueError(str(exc)) from None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _error_rule(verb: str, rule: Any) -> ErrorRule:
    if verb not in VERBS:
        raise ValueError(f"unknown verb {verb!r}; expected one of {VERBS}")
    if not isinstance(rule, dict):
        raise ValueError(f"errors.{verb} must be an object")
    try:
        parsed = ErrorRule(**rule)
    except TypeError as exc:
        raise ValueError(f"errors.{verb}: {exc}") from None
    if parsed.code not in (403, 429, 500, 502, 503, 504):
        raise ValueError(f"errors.{verb}.code must be 403, 429 or 5xx")
    return parsed


class Faults:
    """The live fault configuration, shared by the server and the kubelet."""

    def __init__(self, config: FaultConfig | None = None, seed: int | None = None) -> None:
        self.config = config or FaultConfig()
        self._random = random.Random(seed)

    def replace(self, config: FaultConfig) -> None:
        self.config = config

    def update(self, **changes: Any) -> None:
        """Change some fields in process, e.g. `emu.faults.update(latency_seconds=0.1)`."""
        merged = {**self.config.to_json(), **changes}
        if "errors" in changes:
            merged["errors"] = {
                verb: dataclasses.asdict(rule) if isinstance(rule, ErrorRule) else rule
                for verb, rule in changes["errors"].items()
            }
        self.config = FaultConfig.from_json(merged)

    def reset(self) -> None:
        self.config = FaultConfig()

    def fail(
        self, verb: str, code: int = 503, count: int | None = None, retry_after: int = 1
    ) -> None:
        """Fail `verb` requests with `code` (all of them, or the next `count`).

        urllib3 (under the official client) retries GETs answered 429/503 with Retry-After
        up to three times, honouring the header; `retry_after=0` keeps such tests fast.
        """
        self.config.errors[verb] = ErrorRule(code=code, count=count, retry_after=retry_after)

    def expire_next_watch(self, count: int = 1) -> None:
        self.config.expire_next_watches += count

    async def admit(self, verb: str) -> None:
        """Delay and maybe fail one request, as the config says."""
        if self.config.latency_seconds > 0:
            await asyncio.sleep(self.config.latency_seconds)
        rule = self.config.errors.get(verb)
        if rule is None or rule.count == 0 or self._random.random() >= rule.rate:
            return
        if rule.count is not None:
            rule.count -= 1
        raise self._error(rule, verb)

    def take_expiry(self) -> bool:
        """True (once per configured expiry) when this watch must get 410 Expired."""
        if self.config.expire_next_watches <= 0:
            return False
        self.config.expire_next_watches -= 1
        return True

    def image_fault(self, image: str) -> ImageFault | None:
        return _first_match(
            image,
            (self.config.stuck_pending_images, "stuck"),
            (self.config.image_pull_backoff_images, "backoff"),
        )

    def disruption(self, image: str) -> Disruption | None:
        return _first_match(
            image, (self.config.oom_kill_images, "oom"), (self.config.evict_images, "evict")
        )

    @staticmethod
    def _error(rule: ErrorRule, verb: str) -> ApiError:
        if rule.code == 403:
            return ApiError(403, "Forbidden", f"{verb} is forbidden here (injected fault)")
        if rule.code == 429:
            return too_many_requests(rule.retry_after)
        return server_error(rule.code, rule.retry_after)


def _first_match(image: str, *rules: tuple[str | None, T]) -> T | None:
    """The value of the first rule whose glob matches `image`."""
    return next(
        (value for pattern, value in rules if pattern is not None and fnmatchcase(image, pattern)),
        None,
    )
