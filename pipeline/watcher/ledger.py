"""What the watcher has already said about each pod, so it says each fact once and in order.

Pure bookkeeping, keyed by pod uid. `news` decides whether an observation is worth
publishing: a step forward, where a pod merely pending is no news (the launcher's own
`launched` event, sent when it created the pod, told that) but a pod held back pending is;
`record` remembers every observation once what was news is acknowledged. `reconcile` is the
informer's relist: a fresh list is compared with what was known, and pods that disappeared
while nobody watched are reported. The open (unfinished) pods are what a checkpoint carries
across restarts.
"""

from __future__ import annotations

from collections.abc import Iterable

from pipeline.watcher.translate import PodObservation, vanished


class PodLedger:
    """Last reported observation per pod uid."""

    def __init__(self, known: Iterable[PodObservation] = ()) -> None:
        self._pods: dict[str, PodObservation] = {pod.uid: pod for pod in known}

    def __len__(self) -> int:
        return len(self._pods)

    def __contains__(self, uid: object) -> bool:
        return uid in self._pods

    def get(self, uid: str) -> PodObservation | None:
        return self._pods.get(uid)

    def news(self, seen: PodObservation) -> bool:
        """True when `seen` moves the pod's task forward from what was last reported."""
        return _is_news(seen, self._pods.get(seen.uid))

    def news_among(self, seen: Iterable[PodObservation]) -> list[PodObservation]:
        """The observations of a batch worth publishing, each judged after those before it."""
        ahead: dict[str, PodObservation] = {}
        found = []
        for pod in seen:
            if _is_news(pod, ahead.get(pod.uid) or self._pods.get(pod.uid)):
                found.append(pod)
                ahead[pod.uid] = pod
        return found

    def record(self, seen: PodObservation) -> None:
        """Remember an observation; a step backwards (a stale replay) only refreshes nothing."""
        last = self._pods.get(seen.uid)
        if last is None or seen.rank() > last.rank():
            self._pods[seen.uid] = seen
        elif seen.rank() == last.rank() and not last.terminal:
            self._pods[seen.uid] = seen  # same state, newer details (e.g. a pending reason)

    def forget(self, uid: str) -> None:
        self._pods.pop(uid, None)

    def reconcile(self, listed: Iterable[PodObservation]) -> list[PodObservation]:
        """After a relist: the news among the listed pods, then the unfinished pods now gone.

        Known pods missing from the list had their end happen while nobody watched, so they
        are reported failed (see `vanished`). Nothing changes here: the caller publishes,
        then `record`s what it published and `retain`s the listed uids.
        """
        listed = list(listed)
        present = {pod.uid for pod in listed}
        gone = [vanished(last) for uid, last in self._pods.items()
                if uid not in present and not last.terminal]  # fmt: skip
        return [pod for pod in listed if self.news(pod)] + gone

    def retain(self, uids: Iterable[str]) -> None:
        """Forget every pod not in `uids` (after a relist, the pods that no longer exist)."""
        keep = set(uids)
        self._pods = {uid: pod for uid, pod in self._pods.items() if uid in keep}

    def open_pods(self) -> list[PodObservation]:
        """Pods whose end has not been reported: what a restart must still answer for."""
        return [pod for pod in self._pods.values() if not pod.terminal]


def _is_news(seen: PodObservation, last: PodObservation | None) -> bool:
    """A step beyond the last observation, where a pod is known pending from its start: the
    launcher's `launched` event said so (a copy from here would only be dropped downstream)."""
    return seen.rank() > (last.rank() if last is not None else 0)
