"""`PipelineExecutor`: Airflow 3's executor interface on top of the pipeline.

Airflow loads it from `[core] executor = pipeline.airflow.PipelineExecutor` and runs it in
the scheduler. It meets the pipeline only on the requests topic (each `ExecuteTask` becomes
a TaskRequest) and through the reducer's API (states, cancel, logs), configured by the same
`PIPELINE_*` settings as every stage. What it remembers is bounded by what Airflow gave it
and has not seen finish: an entry leaves when its try ends, is revoked, or is lost.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from airflow.executors import workloads
from airflow.executors.base_executor import BaseExecutor
from airflow.utils.state import TaskInstanceState

from pipeline.airflow.mapping import airflow_outcome, failure_info, task_key, task_request
from pipeline.airflow.publisher import RequestPublisher
from pipeline.client import ApiError, ApiUnavailable, PipelineClient, UnknownTask
from pipeline.config import Settings, load_settings
from pipeline.messages import InvalidMessage, TaskKey, encode

if TYPE_CHECKING:
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.taskinstancekey import TaskInstanceKey

log = logging.getLogger(__name__)

LIST_LIMIT: Final = 10_000
"""The reducer API's largest page; a run with more tries is looked up key by key."""

REQUESTED_BY: Final = "airflow-scheduler"


@dataclass
class _Tracked:
    """One try Airflow handed over and has not heard the end of."""

    key: TaskKey
    since: float
    published: bool = False
    running_reported: bool = False


class PipelineExecutor(BaseExecutor):  # type: ignore[misc]  # Any without the airflow extra
    """Runs Airflow 3 task instances as pipeline tasks (pods or Celery, by the TI's queue)."""

    supports_ad_hoc_ti_run: bool = True
    supports_callbacks: bool = False
    supports_multi_team: bool = False
    is_local: bool = False
    is_production: bool = True
    serve_logs: bool = False  # logs come from the pipeline (get_task_log), not a log server

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settings: Settings = load_settings()
        self._tracked: dict[TaskInstanceKey, _Tracked] = {}
        self._publisher: RequestPublisher | None = None
        self._client: PipelineClient | None = None
        self.clock = time.monotonic

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        airflow = self.settings.airflow
        reducer = self.settings.reducer
        api_url = reducer.api_url or f"http://127.0.0.1:{reducer.api_port}"
        token = getattr(reducer, "api_token", None)
        self._client = PipelineClient(
            api_url,
            token=token.get_secret_value() if token is not None else None,
            timeout_s=airflow.api_timeout_s,
        )
        self._publisher = RequestPublisher(
            self.settings.kafka,
            self.settings.topic.requests,
            max_retries=airflow.publish_max_retries,
            backoff_s=airflow.publish_retry_backoff_s,
        )
        self._publisher.start()

    def end(self) -> None:
        """Finish publishing what was handed over and report what is known; tasks go on."""
        if self._publisher is not None:
            self._publisher.flush(self._publish_deadline_s())
        self.sync()
        self._close(timeout_s=5.0)

    def terminate(self) -> None:
        self._close(timeout_s=0.0)

    def _close(self, timeout_s: float) -> None:
        if self._publisher is not None:
            self._publisher.close(timeout_s)
            self._publisher = None

    def _publish_deadline_s(self) -> float:
        airflow = self.settings.airflow
        backoff = airflow.publish_retry_backoff_s * float(2 ** (airflow.publish_max_retries + 1))
        return backoff + self.settings.kafka.request_timeout_ms / 1000

    # -- handing work over ----------------------------------------------------------------

    def _process_workloads(self, workload_list: Sequence[workloads.All]) -> None:
        for workload in workload_list:
            if not isinstance(workload, workloads.ExecuteTask):
                raise RuntimeError(f"{type(self).__name__} cannot run {type(workload).__name__}")
            key = workload.ti.key
            self.queued_tasks.pop(key, None)
            self.running.add(key)
            try:
                request = task_request(workload, self.settings.airflow)
            except (InvalidMessage, ValueError) as exc:
                self.fail(key, info=f"not a valid pipeline request: {exc}")
                continue
            tracked = _Tracked(TaskKey.from_wire(request["key"]), self.clock())
            self._tracked[key] = tracked
            assert self._publisher is not None, "start() was not called"
            self._publisher.publish(key, tracked.key.partition_key, encode(request))

    # -- hearing back -------------------------------------------------------------------

    def sync(self) -> None:
        """Publish outcomes, then what the pipeline reports for every try still tracked."""
        if self._publisher is not None:
            for token, error in self._publisher.outcomes():
                tracked = self._tracked.get(token)  # type: ignore[call-overload]
                if tracked is None:
                    continue
                if error is None:
                    tracked.published = True
                    tracked.since = self.clock()
                else:
                    self._finish(token, TaskInstanceState.FAILED, error)  # type: ignore[arg-type]
        published = [k for k, t in self._tracked.items() if t.published]
        try:
            states = self._states([self._tracked[k].key for k in published])
        except (ApiUnavailable, ApiError) as exc:
            log.warning("cannot read task states from the pipeline: %s", exc)
            return
        lost_after = self.settings.airflow.lost_timeout_s
        now = self.clock()
        for ti_key in published:
            tracked = self._tracked[ti_key]
            state = states.get(tracked.key)
            if state is None:
                if now - tracked.since > lost_after:
                    info = f"lost: the pipeline has no record of {tracked.key} {lost_after:g}s on"
                    self._finish(ti_key, TaskInstanceState.FAILED, info)
                continue
            self._report(ti_key, tracked, state)

    def _report(self, ti_key: TaskInstanceKey, tracked: _Tracked, state: dict[str, Any]) -> None:
        outcome = airflow_outcome(state["state"])
        if outcome == "running" and not tracked.running_reported:
            tracked.running_reported = True
            self.running_state(ti_key, state.get("pod_name") or state.get("celery_task_id"))
        elif outcome == "success":
            self._finish(ti_key, TaskInstanceState.SUCCESS, None)
        elif outcome == "failed":
            self._finish(ti_key, TaskInstanceState.FAILED, failure_info(state))

    def _finish(self, ti_key: TaskInstanceKey, state: TaskInstanceState, info: Any) -> None:
        self._tracked.pop(ti_key, None)
        self.change_state(ti_key, state, info)

    def _states(self, keys: Iterable[TaskKey]) -> dict[TaskKey, dict[str, Any]]:
        """The reducer's state of each key it knows: one query per (dag, run), then per key
        for what a page too full to hold the run left out."""
        by_run: dict[tuple[str, str], set[TaskKey]] = defaultdict(set)
        for key in keys:
            by_run[(key.dag_id, key.run_id)].add(key)
        found: dict[TaskKey, dict[str, Any]] = {}
        client = self._require_client()
        for (dag_id, run_id), wanted in by_run.items():
            page = client.tasks(dag_id=dag_id, run_id=run_id, limit=LIST_LIMIT)
            for state in page:
                key = TaskKey.from_wire(state["key"])
                if key in wanted:
                    found[key] = state
            if len(page) >= LIST_LIMIT:
                for key in wanted - found.keys():
                    if (one := client.task(key)) is not None:
                        found[key] = one
        return found

    def _require_client(self) -> PipelineClient:
        if self._client is None:
            raise RuntimeError("start() was not called")
        return self._client

    # -- scheduler restarts, revocation, logs ---------------------------------------------

    def try_adopt_task_instances(self, tis: Sequence[TaskInstance]) -> Sequence[TaskInstance]:
        """Adopt every TI whose try the pipeline knows; the rest go back to the scheduler.

        A TI this executor handed over itself is kept as it is (the scheduler also offers its
        own when it thought itself dead, e.g. a heartbeat late on a loaded machine).

        A known try is running, or will be: its request is durable on the topics. A try the
        reducer has never seen cannot be told apart from one never published, so it is
        returned (and re-scheduled as a new try) rather than waited for.
        """
        ours = [ti for ti in tis if ti.key in self._tracked]  # handed over by this process
        tis = [ti for ti in tis if ti.key not in self._tracked]
        keys = {ti.key: task_key(ti) for ti in tis}
        try:
            states = self._states(keys.values())
        except (ApiUnavailable, ApiError) as exc:
            log.warning("cannot adopt: the pipeline's API did not answer: %s", exc)
            return list(tis)
        not_adopted = []
        for ti in tis:
            if keys[ti.key] not in states:
                not_adopted.append(ti)
                continue
            tracked = _Tracked(keys[ti.key], self.clock(), published=True)
            self._tracked[ti.key] = tracked
            self.running.add(ti.key)
        adopted = len(ours) + len(tis) - len(not_adopted)
        log.info("adopted %d task instances, returned %d", adopted, len(not_adopted))
        return not_adopted

    def revoke_task(self, *, ti: TaskInstance) -> None:
        """Forget the try and ask the pipeline to cancel it; never raises."""
        self.running.discard(ti.key)
        self.queued_tasks.pop(ti.key, None)
        tracked = self._tracked.pop(ti.key, None)
        key = tracked.key if tracked is not None else task_key(ti)
        try:
            answer = self._require_client().cancel(
                key, reason="revoked by the Airflow scheduler", requested_by=REQUESTED_BY
            )
        except (ApiError, ApiUnavailable, RuntimeError) as exc:
            log.warning("cancel of %s was not accepted: %s", key, exc)
            return
        log.info("cancel of %s: accepted=%s state=%s", key, answer.accepted, answer.state)

    def get_task_log(self, ti: TaskInstance, try_number: int) -> tuple[list[str], list[str]]:
        """The try's output as the pipeline keeps it (its pod's or worker's log)."""
        key = TaskKey(ti.dag_id, ti.task_id, ti.run_id, ti.map_index, try_number)
        try:
            text = self._require_client().logs(key)
        except UnknownTask:
            return [f"the pipeline has no log of {key}"], []
        except (ApiError, ApiUnavailable, RuntimeError) as exc:
            return [f"cannot read the pipeline's log of {key}: {exc}"], []
        return [f"pipeline task log of {key}"], [text]
