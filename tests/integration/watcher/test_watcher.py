"""The watcher against the emulator and the real broker: events, reasons, timeouts, cleanup."""

from __future__ import annotations

import asyncio

import pytest
from kubernetes import client
from prometheus_client import REGISTRY

from pipeline.config import Settings
from pipeline.pods import managed_selector, pod_name, try_label
from pipeline.sandbox.kube import KubeEmulator
from pipeline.watcher.kube import PodApi
from tests.fixtures.polling import eventually
from tests.integration.watcher.support import (
    by_task,
    configure,
    create_pod,
    delete_pod,
    pod_names,
    summary,
    task,
    terminal,
    wait_for_ends,
    wait_for_events,
    watcher_running,
)

pytestmark = pytest.mark.integration


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_each_phase_reaches_the_events_topic_with_precise_reasons(
    watcher_settings: Settings, kube_emulator: KubeEmulator, core_v1: client.CoreV1Api
) -> None:
    kube_emulator.faults.update(
        oom_kill_images="oom/*", image_pull_backoff_images="missing/*", evict_images="evict/*",
        disruption_after_seconds=0.1,
    )  # fmt: skip
    ok, exits, oom, pull, evicted = (task(n) for n in range(5))
    async with watcher_running(watcher_settings):
        await create_pod(core_v1, ok, run_seconds=0.3)
        await create_pod(core_v1, exits, exit_code=3)
        await create_pod(core_v1, oom, image="oom/app:1", run_seconds=30)
        await create_pod(core_v1, pull, image="missing/app:1")
        await create_pod(core_v1, evicted, image="evict/app:1", run_seconds=30)
        found = await wait_for_ends(watcher_settings, [ok, exits, oom, pull, evicted])

    # merely pending is the launcher's `launched` to tell: the watcher tells what follows
    assert [e["state"] for e in by_task(found)[ok]] == ["running", "success"]
    assert summary(terminal(found, ok)) == ("success", None, 0)
    assert summary(terminal(found, exits)) == ("failed", "exit code 3", 3)
    assert summary(terminal(found, oom)) == ("failed", "OOMKilled", 137)
    assert summary(terminal(found, pull)) == (
        "failed", 'ImagePullBackOff: Back-off pulling image "missing/app:1"', None,
    )  # fmt: skip
    assert terminal(found, evicted)["reason"].startswith("Evicted: ")  # type: ignore[index]
    event = terminal(found, ok)
    assert event is not None
    assert (event["source"], event["executor"], event["namespace"]) == (
        "watcher", "kubernetes", "default",
    )  # fmt: skip
    assert event["resource_version"].isdigit()


async def test_a_pod_failed_by_its_init_container_says_which_and_why(
    watcher_settings: Settings, kube_emulator: KubeEmulator, core_v1: client.CoreV1Api
) -> None:
    failing = task(0)
    async with watcher_running(watcher_settings):
        await create_pod(core_v1, failing, exit_code=4, init_container="fetch-dags")
        found = await wait_for_ends(watcher_settings, [failing])
    assert summary(terminal(found, failing)) == (
        "failed", "init container fetch-dags: exit code 4", 4,
    )  # fmt: skip


async def test_a_pod_deleted_while_running_fails_its_task(
    watcher_settings: Settings, core_v1: client.CoreV1Api
) -> None:
    key = task(1)
    async with watcher_running(watcher_settings):
        name = await create_pod(core_v1, key, run_seconds=60)
        await wait_for_events(watcher_settings, lambda f: any(
            e["state"] == "running" for e in by_task(f).get(key, [])))  # fmt: skip
        await delete_pod(core_v1, name)
        found = await wait_for_ends(watcher_settings, [key])
    state, reason, _ = summary(terminal(found, key))
    assert state == "failed"
    assert reason.startswith("pod deleted while running")


async def test_pods_stuck_pending_are_failed_and_deleted(
    watcher_settings: Settings,
    kube_emulator: KubeEmulator,
    core_v1: client.CoreV1Api,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = configure(monkeypatch, pending_timeout_s=1)
    kube_emulator.faults.update(stuck_pending_images="stuck/*")
    stuck, fine = task(1), task(2)
    async with watcher_running(settings):
        stuck_name = await create_pod(core_v1, stuck, image="stuck/app:1")
        await create_pod(core_v1, fine, run_seconds=0.1)
        found = await wait_for_ends(settings, [stuck, fine])
        await eventually(lambda: _gone(core_v1, stuck_name), timeout_s=10)
    state, reason, _ = summary(terminal(found, stuck))
    assert state == "failed"
    assert reason.startswith("pending timeout: still Pending after 1s (ContainerCreating)")
    assert summary(terminal(found, fine))[0] == "success"


async def _gone(api: client.CoreV1Api, name: str) -> bool:
    return name not in await pod_names(api)


@pytest.mark.parametrize(
    ("delete_pods", "on_failure", "deleted"),
    [(True, False, {"ok"}), (True, True, {"ok", "bad"}), (False, True, set())],
)
async def test_cleanup_deletes_exactly_the_pods_the_policy_says(
    watcher_settings: Settings,
    core_v1: client.CoreV1Api,
    monkeypatch: pytest.MonkeyPatch,
    delete_pods: bool,
    on_failure: bool,
    deleted: set[str],
) -> None:
    settings = configure(monkeypatch, delete_pods=delete_pods, delete_pods_on_failure=on_failure)
    ok, bad = task(1), task(2)
    async with watcher_running(settings):
        names = {"ok": await create_pod(core_v1, ok), "bad": await create_pod(core_v1, bad,
                 exit_code=1)}  # fmt: skip
        await wait_for_ends(settings, [ok, bad])
        sweeps = metric("pipeline_watcher_sweeps_total", namespace="default")
        await eventually(  # two full sweeps after both ends: whatever is kept stays kept
            lambda: _at_least(metric("pipeline_watcher_sweeps_total", namespace="default"),
                              sweeps + 2),
        )  # fmt: skip
        remaining = await pod_names(core_v1)
    assert {role for role, name in names.items() if name not in remaining} == deleted


async def _at_least(value: float, wanted: float) -> bool:
    return value >= wanted


async def test_ended_pods_are_deleted_by_try_label_and_a_running_one_is_kept(
    kube_emulator: KubeEmulator, core_v1: client.CoreV1Api
) -> None:
    """One delete-collection call per batch: only the listed tries' pods, only ended ones."""
    ended, running, unlisted = [task(0), task(1)], task(2), task(3)
    for key in ended:
        await create_pod(core_v1, key, run_seconds=0.0)
    await create_pod(core_v1, running, run_seconds=60)
    await create_pod(core_v1, unlisted, run_seconds=0.0)
    api = PodApi(core_v1, "default", managed_selector())
    phases = {"Succeeded", "Running"}
    await eventually(lambda: _phases(core_v1, phases, len(ended) + 2), timeout_s=10)
    deleted = await api.delete_ended([try_label(k) for k in (*ended, running)])
    assert deleted == {pod_name(k) for k in ended}
    assert await pod_names(core_v1) == {pod_name(running), pod_name(unlisted)}


async def test_without_deletecollection_finished_pods_go_one_by_one(
    watcher_settings: Settings,
    kube_emulator: KubeEmulator,
    core_v1: client.CoreV1Api,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An RBAC that does not grant `deletecollection` (403): asked once, then done without."""
    kube_emulator.faults.update(errors={"deletecollection": {"code": 403}})
    settings = configure(monkeypatch, delete_pods=True, pending_check_interval_s=3600)
    first, second = task(1), task(2)
    async with watcher_running(settings):
        await create_pod(core_v1, first)
        await wait_for_ends(settings, [first])
        await eventually(lambda: _gone(core_v1, pod_name(first)), timeout_s=10)
        await create_pod(core_v1, second)
        await eventually(lambda: _gone(core_v1, pod_name(second)), timeout_s=10)
    assert kube_emulator.stats.requests["deletecollection"] == 1


async def _gone(core_v1: client.CoreV1Api, name: str) -> bool:
    return name not in await pod_names(core_v1)


async def _phases(core_v1: client.CoreV1Api, phases: set[str], count: int) -> bool:
    """Whether `count` pods are in one of `phases` (the ended ones and the running one)."""
    pods = await asyncio.to_thread(core_v1.list_namespaced_pod, "default")
    return sum(p.status.phase in phases for p in pods.items) == count


async def test_a_forced_410_relists_and_loses_nothing(
    watcher_settings: Settings,
    kube_emulator: KubeEmulator,
    core_v1: client.CoreV1Api,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = configure(monkeypatch, watch_timeout_s=1)  # reconnects often, meeting the 410s
    keys = [task(n) for n in range(4)]
    gone_before = metric("pipeline_watcher_gone_total", namespace="default")
    async with watcher_running(settings):
        await create_pod(core_v1, keys[0], run_seconds=1.5)
        kube_emulator.faults.expire_next_watch(3)
        for key in keys[1:]:
            await create_pod(core_v1, key, run_seconds=1.0)
        found = await wait_for_ends(settings, keys)
    assert metric("pipeline_watcher_gone_total", namespace="default") >= gone_before + 1
    assert all(summary(terminal(found, k))[0] == "success" for k in keys)


async def test_dropped_streams_reconnect_and_lose_nothing(
    watcher_settings: Settings, kube_emulator: KubeEmulator, core_v1: client.CoreV1Api
) -> None:
    kube_emulator.faults.update(watch_drop_after_events=2)
    keys = [task(n) for n in range(5)]
    restarts = metric("pipeline_watcher_watch_restarts_total", namespace="default", why="timeout")
    async with watcher_running(watcher_settings):
        for key in keys:
            await create_pod(core_v1, key, run_seconds=0.2)
        found = await wait_for_ends(watcher_settings, keys)
    assert all(summary(terminal(found, k))[0] == "success" for k in keys)
    after = metric("pipeline_watcher_watch_restarts_total", namespace="default", why="timeout")
    assert after >= restarts + 5  # 15 pod changes, at most 2 per stream


async def test_restart_resumes_from_the_checkpoint_even_when_it_expired(
    watcher_settings: Settings, kube_emulator: KubeEmulator, core_v1: client.CoreV1Api
) -> None:
    """Changes made while no watcher runs are reported; a relist finds pods that vanished."""
    finishes, vanishes, appears = task(1), task(2), task(3)
    async with watcher_running(watcher_settings):
        await create_pod(core_v1, finishes, run_seconds=1.0)
        doomed = await create_pod(core_v1, vanishes, run_seconds=60)
        await wait_for_events(watcher_settings, lambda f: all(
            any(e["state"] == "running" for e in by_task(f).get(k, []))
            for k in (finishes, vanishes)))  # fmt: skip
    # Away: one pod finishes, one is deleted, one is born and finishes; the version expires.
    await delete_pod(core_v1, doomed)
    await create_pod(core_v1, appears, run_seconds=0.1)
    await eventually(lambda: _all_gone_or_done(core_v1, [doomed]), timeout_s=10)
    kube_emulator.faults.expire_next_watch()
    async with watcher_running(watcher_settings, ready=False):
        found = await wait_for_ends(watcher_settings, [finishes, vanishes, appears])
    assert summary(terminal(found, finishes))[0] == "success"
    assert summary(terminal(found, appears))[0] == "success"
    assert summary(terminal(found, vanishes))[:2] == (
        "failed", "pod deleted while the watch was away (last seen running)",
    )  # fmt: skip


async def _all_gone_or_done(api: client.CoreV1Api, gone: list[str]) -> bool:
    pods = await asyncio.to_thread(api.list_namespaced_pod, "default")
    phases = {pod.metadata.name: pod.status.phase for pod in pods.items}
    return not set(gone) & set(phases) and all(
        p in ("Succeeded", "Failed") for p in phases.values()
    )


async def test_a_watch_resumed_on_a_quiet_cluster_is_ready_before_any_change(
    watcher_settings: Settings, core_v1: client.CoreV1Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Resumed from its checkpoint with nothing changing, the watch hears no frame until the
    API's first bookmark (a minute on the emulator, as on apiserver) or the end of the
    request: being answered is what makes it ready."""
    settings = configure(monkeypatch, watch_timeout_s=120)
    done = task(1)
    async with watcher_running(settings):
        await create_pod(core_v1, done)
        await wait_for_ends(settings, [done])
    relists = metric("pipeline_watcher_gone_total", namespace="default")
    async with watcher_running(settings) as stage:  # ready within 15 s, or it raises
        assert stage.ready
    assert metric("pipeline_watcher_gone_total", namespace="default") == relists, "resumed"
