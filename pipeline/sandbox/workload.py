"""A mixed workload for the demo and the end-to-end tests, with the outcome each task must reach.

Both executors, successes and failures, invalid messages, and optionally a disallowed command,
a pod stuck Pending, and duplicate submissions — every record paired with its expected end.
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from pipeline import messages
from pipeline.messages import State, TaskKey

STUCK_IMAGE = "registry.invalid/stuck-pending:1"


def task_argv(exit_code: int, sleep_s: float, trace: Path | None = None) -> list[str]:
    """The command: sleep, then exit; with `trace`, first append a line to that file, so a
    test can count how often each command really ran."""
    mark = f"open({str(trace)!r}, 'a').write('ran\\n'); " if trace is not None else ""
    code = f"import time, sys; {mark}time.sleep({sleep_s}); sys.exit({exit_code})"
    return [sys.executable, "-c", code]


def trace_file(trace_dir: Path, key: TaskKey) -> Path:
    """Where the command of `key` records each of its runs."""
    return trace_dir / f"{key.dag_id}.{key.task_id}.{key.map_index}.{key.try_number}"


@dataclass
class Workload:
    """Records to publish (key, value) and what each task must end as."""

    run_id: str
    records: list[tuple[bytes | None, bytes]] = field(default_factory=list)
    valid: list[tuple[bytes | None, bytes]] = field(default_factory=list)
    expected: dict[TaskKey, State] = field(default_factory=dict)
    executors: dict[TaskKey, str] = field(default_factory=dict)
    invalid: int = 0
    trace_dir: Path | None = None

    def add(self, key: TaskKey, queue: str, executor: str, state: State, **fields: object) -> None:
        trace = trace_file(self.trace_dir, key) if self.trace_dir is not None else None
        argv = fields.pop("command", None) or task_argv(
            0 if state is State.SUCCESS else 3, 0.1, trace
        )
        request = messages.make_request(key, argv, queue, **fields)  # type: ignore[arg-type]
        record = (key.partition_key, messages.encode(request))
        self.records.append(record)
        self.valid.append(record)
        self.expected[key] = state
        self.executors[key] = executor

    def add_invalid(self, index: int) -> None:
        key = TaskKey("demo-invalid", f"bad-{index}", self.run_id)
        broken: list[bytes] = [
            b"{this is not json",
            orjson.dumps({"schema_version": 1, "key": key.to_wire(), "queue": "default"}),
            orjson.dumps({"schema_version": 99, "key": key.to_wire(), "command": ["x"]}),
        ]
        value = broken[index % len(broken)]
        self.records.append((key.partition_key, value))
        self.invalid += 1
        if index % len(broken) != 0:  # the key is readable, so the reducer hears of it
            self.expected[key] = State.DEAD_LETTERED
            self.executors[key] = "none"

    def expected_counts(self) -> Counter[tuple[str, str]]:
        return Counter((self.executors[k], s.value) for k, s in self.expected.items())


def mixed_workload(
    n: int,
    run_id: str = "demo",
    *,
    kubernetes_queue: str = "kubernetes",
    celery_queue: str = "default",
    disallowed: int = 0,
    stuck_pending: int = 0,
    duplicates: int = 0,
    trace_dir: Path | None = None,
) -> Workload:
    """`n` requests: ~45% Kubernetes, ~45% Celery, 1 in 10 failing, 1 in 20 invalid."""
    work = Workload(run_id, trace_dir=trace_dir)
    for i in range(n):
        slot = i % 20
        if slot == 19:
            work.add_invalid(i)
            continue
        executor, queue = (
            ("kubernetes", kubernetes_queue) if slot % 2 == 0 else ("celery", celery_queue)
        )
        state = State.FAILED if slot in (17, 18) else State.SUCCESS
        work.add(TaskKey(f"demo-{executor}", f"task-{i}", run_id), queue, executor, state)
    for i in range(disallowed):
        key = TaskKey("demo-kubernetes", f"disallowed-{i}", run_id)
        work.add(key, kubernetes_queue, "kubernetes", State.FAILED, command=["sh", "-c", "id"])
    for i in range(stuck_pending):
        key = TaskKey("demo-kubernetes", f"stuck-{i}", run_id)
        work.add(key, kubernetes_queue, "kubernetes", State.FAILED, image=STUCK_IMAGE)
    work.records.extend(work.valid[:duplicates])
    return work
