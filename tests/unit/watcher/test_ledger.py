"""The ledger reports each pod's task forward only, and accounts for pods gone while away."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pipeline.messages import State
from pipeline.watcher.checkpoint import Checkpoint
from pipeline.watcher.ledger import PodLedger
from pipeline.watcher.translate import PodObservation, observe

from .pod_docs import pod, terminated, unschedulable, waiting

PHASES = ["Pending", "Running", "Succeeded", "Failed"]


def seen(phase: str, uid: str = "uid-1", rv: str = "1") -> PodObservation:
    containers = {"Succeeded": [terminated(0, "Completed")], "Failed": [terminated(1)]}
    observation = observe(pod(phase, uid=uid, rv=rv, containers=containers.get(phase)))
    assert observation is not None
    return observation


def publish(ledger: PodLedger, observations: list[PodObservation]) -> list[PodObservation]:
    published = []
    for observation in observations:
        if ledger.news(observation):
            published.append(observation)
            ledger.record(observation)
    return published


def publish_all(ledger: PodLedger, observations: list[PodObservation]) -> list[State]:
    return [observation.state for observation in publish(ledger, observations)]


def test_a_new_state_is_news_and_the_same_state_again_is_not() -> None:
    ledger = PodLedger()
    running, again, done = seen("Running"), seen("Running", rv="2"), seen("Succeeded", rv="3")
    assert publish_all(ledger, [running, again, done]) == [State.RUNNING, State.SUCCESS]


def test_a_pod_pending_for_no_reason_is_left_to_the_launchers_event() -> None:
    ledger = PodLedger()
    assert publish_all(ledger, [seen("Pending"), seen("Running", rv="2")]) == [State.RUNNING]


def test_a_pod_held_back_pending_is_news_once() -> None:
    ledger = PodLedger()
    creating = observe(pod("Pending", containers=[waiting("ContainerCreating")]))
    held = observe(pod("Pending", rv="11", conditions=[unschedulable("0/3 nodes available")]))
    pulling = observe(pod("Pending", rv="12", containers=[waiting("ErrImagePull")]))
    assert creating and held and pulling
    assert publish_all(ledger, [creating, held, pulling, seen("Running")]) == [
        State.LAUNCHED, State.RUNNING,
    ]  # fmt: skip
    assert ledger.get("uid-1") == seen("Running")


def test_stale_replays_never_step_back() -> None:
    ledger = PodLedger()
    assert publish_all(ledger, [seen("Succeeded"), seen("Running"), seen("Pending")]) == [
        State.SUCCESS
    ]


def test_a_second_end_is_not_news() -> None:
    ledger = PodLedger()
    assert publish_all(ledger, [seen("Failed"), seen("Succeeded")]) == [State.FAILED]


def test_same_state_refreshes_details_until_the_end() -> None:
    ledger = PodLedger()
    ledger.record(seen("Pending", rv="1"))
    ledger.record(seen("Pending", rv="5"))
    assert ledger.get("uid-1").resource_version == "5"  # type: ignore[union-attr]


@given(st.lists(st.sampled_from(PHASES), max_size=12))
def test_published_states_strictly_progress(phases: list[str]) -> None:
    ledger = PodLedger()
    observations = [seen(p, rv=str(i)) for i, p in enumerate(phases)]
    published = publish(ledger, observations)
    ranks = [o.rank() for o in published]
    assert ranks == sorted(set(ranks))
    assert sum(o.terminal for o in published) <= 1
    told = [o for o in observations if o.state is not State.LAUNCHED]
    if told:
        assert published[0] == told[0]


def test_reconcile_reports_changes_and_unfinished_pods_that_vanished() -> None:
    ledger = PodLedger([seen("Running", "a"), seen("Running", "b"), seen("Succeeded", "c"),
                        seen("Pending", "d")])  # fmt: skip
    listed = [seen("Succeeded", "a"), seen("Pending", "d"), seen("Running", "e")]
    news = ledger.reconcile(listed)
    assert [(o.uid, o.state) for o in news] == [
        ("a", State.SUCCESS), ("e", State.RUNNING), ("b", State.FAILED),
    ]  # fmt: skip
    assert news[-1].reason == "pod deleted while the watch was away (last seen running)"
    assert "b" in ledger  # reconcile reports; the caller records and retains


def test_retain_forgets_pods_that_are_gone() -> None:
    ledger = PodLedger([seen("Running", "a"), seen("Running", "b")])
    ledger.retain(["a"])
    assert "a" in ledger
    assert "b" not in ledger


def test_a_checkpoint_carries_only_unfinished_pods() -> None:
    ledger = PodLedger([seen("Running", "a"), seen("Succeeded", "b"), seen("Pending", "c")])
    saved = Checkpoint.decode(Checkpoint("9", ledger.open_pods()).encode())
    restored = PodLedger(saved.open_pods)
    assert sorted(o.uid for o in restored.open_pods()) == ["a", "c"]
    assert restored.get("a") == ledger.get("a")


def test_news_among_a_batch_judges_each_after_the_ones_before_it() -> None:
    ledger = PodLedger([seen("Pending")])
    batch = [seen("Running", rv="2"), seen("Running", rv="3"), seen("Pending", rv="4"),
             seen("Succeeded", rv="5"), seen("Running", uid="uid-2")]  # fmt: skip
    assert ledger.news_among(batch) == [batch[0], batch[3], batch[4]]
    assert ledger.news(batch[0]), "judging a batch remembers nothing"


@given(st.lists(st.tuples(st.sampled_from(PHASES), st.sampled_from(["a", "b"])), max_size=12))
def test_news_among_equals_publishing_one_by_one(steps: list[tuple[str, str]]) -> None:
    batch = [seen(phase, uid=uid, rv=str(i)) for i, (phase, uid) in enumerate(steps)]
    assert PodLedger().news_among(batch) == publish(PodLedger(), batch)
