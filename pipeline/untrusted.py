"""Checks on bytes read from a topic, made before they are parsed, and a bounded quote of them.

Anyone who can write to a topic can send anything: a tombstone, a megabyte, or JSON nested
deeper than the parser, the validator (`Recursion limit reached` past 254 levels) or the
encoder can take. These checks turn each into a reason instead of an exception, in time
proportional to the message and without recursion. No I/O.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Final

MAX_DEPTH: Final = 64
"""Nesting of arrays and objects a message may have; a pod override needs about ten."""

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKET = re.compile(rb"[\[\]{}]")


def too_deep(raw: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether arrays and objects in `raw` nest deeper than `limit` (brackets in strings
    are not counted). Most messages hold fewer brackets than the limit: one count says so."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    depth = 0
    for match in _BRACKET.finditer(_STRING.sub(b'""', raw)):
        if match.group() in b"[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


@dataclass(frozen=True, slots=True)
class Quote:
    """At most `limit` bytes of an original, with its full size and digest when cut."""

    kept: bytes
    size: int
    sha256: str | None

    @property
    def truncated(self) -> bool:
        return self.sha256 is not None


def quote(raw: bytes, limit: int) -> Quote:
    """`raw` whole when it fits in `limit` bytes, else its first `limit` bytes and a digest
    of all of it, so the letter says what it stood for and can be matched to its source."""
    if len(raw) <= limit:
        return Quote(raw, len(raw), None)
    return Quote(raw[: max(limit, 0)], len(raw), hashlib.sha256(raw).hexdigest())


def bounded_text(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, saying how much was cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"
