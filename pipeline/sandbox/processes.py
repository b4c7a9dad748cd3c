"""Child processes of the sandbox: started with argv lists, logged to files, always reaped."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ChildProcess:
    """One named child: its argv, environment and log file; restartable."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str]
    log_path: Path
    process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                env=dict(self.env),
                start_new_session=True,  # Ctrl-C in a terminal reaches us, not every child
            )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM, wait up to `timeout_s`, then SIGKILL the whole process group."""
        if self.process is None:
            return None
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), timeout_s)
            except TimeoutError:
                self.kill_group()
                await self.process.wait()
        self.kill_group()  # grandchildren (e.g. a worker's pool) go with it
        return self.process.returncode

    def kill_group(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)

    async def restart(self, timeout_s: float = 15.0) -> None:
        await self.stop(timeout_s)
        await self.start()


@dataclass
class ProcessGroup:
    """The sandbox's children, stopped together."""

    log_dir: Path
    env: dict[str, str]
    children: dict[str, ChildProcess] = field(default_factory=dict)

    async def start(self, name: str, *args: str, env: Mapping[str, str] | None = None) -> None:
        """Start `python -m pipeline ARGS` as a child named `name`."""
        child = ChildProcess(
            name,
            [sys.executable, "-m", "pipeline", *args],
            {**self.env, **(env or {})},
            self.log_dir / f"{name}.log",
        )
        await child.start()
        self.children[name] = child

    def exited(self) -> list[ChildProcess]:
        return [c for c in self.children.values() if not c.running]

    async def stop_all(self, timeout_s: float = 15.0) -> None:
        await asyncio.gather(*(child.stop(timeout_s) for child in self.children.values()))
