"""Watch frames as the watcher parses them: a whole pod per line, anything else skipped."""

from __future__ import annotations

import pytest

from pipeline.watcher.kube import _RawWatch


def test_a_frame_keeps_the_pod_as_served_under_both_names() -> None:
    pod = {"metadata": {"name": "p", "resourceVersion": "7"}, "status": {"phase": "Running"}}
    frame = _RawWatch().unmarshal_event(
        '{"type":"MODIFIED","object":{"metadata":{"name":"p","resourceVersion":"7"},'
        '"status":{"phase":"Running"}}}',
        None,
    )
    assert frame == {"type": "MODIFIED", "object": pod, "raw_object": pod}


@pytest.mark.parametrize("line", ["", "   ", "{not json", "[1, 2]", '"text"', "17"])
def test_a_line_that_is_no_frame_is_skipped(line: str) -> None:
    assert _RawWatch().unmarshal_event(line, None) is None
