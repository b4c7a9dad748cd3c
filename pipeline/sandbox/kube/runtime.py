"""Container runtimes for the simulated kubelet: a timer, or a real local process.

Both expose `wait()` (exit code when the container ends by itself) and `stop(grace)`
(SIGTERM, then SIGKILL after the grace period) so the kubelet drives them alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import time
from typing import Protocol

from .logs import LogBuffer
from .selectors import FIELD_PATHS, FieldPaths, field_value
from .status import JsonObj
from .validation import KEYED_FIELD

_VAR_REF = re.compile(r"\$\$|\$\(([-._A-Za-z0-9]+)\)")


class StartError(Exception):
    """The container could not start (kubelet reports StartError, exit code 128)."""


class ContainerRun(Protocol):
    started: float  # time.monotonic() at its start
    process_group: int | None  # its local processes' group, when it has any
    stdin: asyncio.StreamWriter | None  # its open stdin (`stdin: true`), what attach writes to

    async def wait(self) -> int: ...

    async def stop(self, grace_seconds: float) -> int: ...


class SimulatedRun:
    """Runs for `seconds`, then exits with `exit_code`; `stop` exits 143 like SIGTERM.

    Its output is the `output` text when given; otherwise a start line now and an exit line
    at the end, so `kubectl logs` (with `-f` or `--timestamps`) shows something plausible.
    """

    def __init__(
        self, seconds: float, exit_code: int, output: str, log: LogBuffer, container: JsonObj
    ) -> None:
        self.started = time.monotonic()
        self.process_group: int | None = None
        self.stdin: asyncio.StreamWriter | None = None
        self._seconds = seconds
        self._exit_code = exit_code
        self._quiet = bool(output)
        if output:
            log.append(output.encode() + (b"" if output.endswith("\n") else b"\n"))
        else:
            argv = " ".join(
                str(a) for a in (container.get("command") or []) + (container.get("args") or [])
            )
            what = argv or container.get("image", "")
            log.append(f"sandbox: simulating {container['name']}: {what}\n".encode())
        self._log = log

    async def wait(self) -> int:
        await asyncio.sleep(self._seconds)
        if not self._quiet:
            self._log.append(f"sandbox: exited with code {self._exit_code}\n".encode())
        self._log.close()
        return self._exit_code

    async def stop(self, grace_seconds: float) -> int:
        self._log.close()
        return 128 + (signal.SIGTERM if grace_seconds > 0 else signal.SIGKILL)


class ProcessRun:
    """The container's command+args as a local process (never through a shell); its stdin
    is a pipe kept open when the container asks for one (`stdin: true`), else empty."""

    def __init__(self, process: asyncio.subprocess.Process, log: LogBuffer) -> None:
        self.started = time.monotonic()
        self.process_group: int | None = process.pid  # its own session's leader
        self.stdin = process.stdin
        self._process = process
        self._log = log
        self._pump = asyncio.create_task(self._copy_output())

    @classmethod
    async def start(cls, pod: JsonObj, container: JsonObj, log: LogBuffer) -> ProcessRun:
        env = container_env(pod, container)
        argv = [_expand(str(a), env) for a in container_argv(container)]
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                env=env,
                cwd=container.get("workingDir") or None,
                stdin=asyncio.subprocess.PIPE
                if container.get("stdin")
                else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            raise StartError(f'exec: "{argv[0]}": {exc.strerror or exc}') from None
        return cls(process, log)

    async def wait(self) -> int:
        code = await self._process.wait()
        await asyncio.shield(self._pump)
        return _exit_code(code)

    async def stop(self, grace_seconds: float) -> int:
        if self._process.returncode is None:
            self._signal(signal.SIGTERM if grace_seconds > 0 else signal.SIGKILL)
            try:
                await asyncio.wait_for(self._process.wait(), grace_seconds or None)
            except TimeoutError:
                self._signal(signal.SIGKILL)
        return await self.wait()

    def _signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, sig)

    async def _copy_output(self) -> None:
        assert self._process.stdout is not None
        while chunk := await self._process.stdout.read(65536):
            self._log.append(chunk)
        self._log.close()


def container_argv(container: JsonObj) -> list[str]:
    """command+args; with no command the args run as the command (the image is ignored)."""
    argv = [str(a) for a in (container.get("command") or []) + (container.get("args") or [])]
    if not argv:
        raise StartError("no command: the sandbox ignores images, so set command or args")
    return argv


def container_env(pod: JsonObj, container: JsonObj) -> dict[str, str]:
    """The emulator's environment (for PATH), HOSTNAME, then the container's `env` values:
    literal ones, and the pod's own fields by the downward API (`valueFrom.fieldRef`)."""
    env = {**os.environ, "HOSTNAME": pod["metadata"]["name"]}
    for var in container.get("env") or []:
        if not isinstance(var, dict) or "name" not in var:
            continue
        field_path = ((var.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
        if field_path is not None:
            env[var["name"]] = pod_field(pod, str(field_path))
        else:
            env[var["name"]] = _expand(str(var.get("value", "")), env)
    return env


_DOWNWARD_FIELDS: FieldPaths = {  # beside the keyed and the listed (IPs) ones
    **{path: FIELD_PATHS[path] for path in (
        "metadata.name", "metadata.namespace", "spec.nodeName", "spec.serviceAccountName",
        "status.podIP")},
    "metadata.uid": ("metadata", "uid"),
    "status.hostIP": ("status", "hostIP"),
}  # fmt: skip


def pod_field(pod: JsonObj, field_path: str) -> str:
    """A downward-API field of the pod as the kubelet renders it; empty when unset."""
    keyed = KEYED_FIELD.fullmatch(field_path)
    if keyed is not None:
        return str((pod["metadata"].get(keyed.group(1)) or {}).get(keyed.group(2), ""))
    if field_path in ("status.hostIPs", "status.podIPs"):
        listed = pod.get("status", {}).get(field_path.split(".")[1]) or []
        return ",".join(str(entry.get("ip", "")) for entry in listed)
    keys = _DOWNWARD_FIELDS.get(field_path)
    return field_value(pod, keys) if keys is not None else ""


def _expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: known names substitute, `$$` escapes, others stay."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _VAR_REF.sub(replace, text)


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode
