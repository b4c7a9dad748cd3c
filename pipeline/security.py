"""The command allowlist, shared by every executor so a task runs only what operators allow."""

from __future__ import annotations

from collections.abc import Sequence


def command_violation(argv: Sequence[str], allowed_prefixes: Sequence[Sequence[str]]) -> str | None:
    """Why `argv` may not run, or None when it starts with one of the allowed prefixes.

    Matching is on whole argv elements, never on a joined string, so `["airflow", "tasks",
    "run"]` does not allow `["airflow", "tasks", "runner"]` or `["airflow tasks run"]`.
    """
    if not argv:
        return "command is empty"
    for prefix in allowed_prefixes:
        if prefix and list(argv[: len(prefix)]) == list(prefix):
            return None
    shown = " ".join(argv[:3]) + (" ..." if len(argv) > 3 else "")
    return f"command not allowed: {shown!r} matches no allowed prefix"
