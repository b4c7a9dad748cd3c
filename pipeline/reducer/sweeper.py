"""Query API (stub)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.reducer.app import Reducer


def register(reducer: Reducer) -> None:
    return None
