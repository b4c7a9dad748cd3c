"""`pipeline sandbox kube`: the Kubernetes API emulator in the foreground."""

from __future__ import annotations

import asyncio
import shutil
import signal
from pathlib import Path
from typing import Annotated

import orjson
import typer

from pipeline import eventloop
from pipeline.cli.common import CliError, console
from pipeline.sandbox.kube import MODES, FaultConfig, KubeEmulator, Timings

# The listening options every `pipeline sandbox` server takes.
Port = Annotated[int, typer.Option("--port", help="0 picks a free port.")]
Host = Annotated[str, typer.Option("--host", help="Address to listen on.")]


def kube(
    port: Port = 8001,
    host: Host = "127.0.0.1",
    mode: Annotated[
        str, typer.Option("--mode", help="simulate | process (run commands locally) | off.")
    ] = "simulate",
    token: Annotated[
        str | None, typer.Option("--token", help="Require this bearer token (401 otherwise).")
    ] = None,
    capacity: Annotated[
        int | None, typer.Option("--capacity", min=0, help="Max pods on the node at once.")
    ] = None,
    run_seconds: Annotated[
        float, typer.Option("--run-seconds", min=0, help="Simulated run time (default).")
    ] = 5.0,
    faults: Annotated[
        str | None,
        typer.Option("--faults", help="Fault config as JSON, or @FILE holding it."),
    ] = None,
    kubeconfig: Annotated[
        Path | None, typer.Option("--kubeconfig", help="Also write the kubeconfig here.")
    ] = None,
) -> None:
    """Serve the core/v1 pods API with a simulated node until Ctrl-C or SIGTERM."""
    if mode not in MODES:
        raise CliError(f"--mode must be one of {', '.join(MODES)}, not {mode!r}")
    emulator = KubeEmulator(
        port=port,
        mode=mode,
        token=token,
        host=host,
        capacity=capacity,
        timings=Timings(run_seconds=run_seconds),
        faults=_fault_config(faults),
    )
    eventloop.run(_serve(emulator, kubeconfig))


async def _serve(emulator: KubeEmulator, kubeconfig: Path | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await emulator.start()
    except OSError as exc:
        raise CliError(f"cannot listen on {emulator.host}:{emulator.port}: {exc}") from None
    try:
        path = emulator.kubeconfig_path
        if kubeconfig is not None:
            shutil.copyfile(path, kubeconfig)
            path = kubeconfig
        for line in (
            f"kube API emulator on {emulator.url} (kubelet {emulator.kubelet.mode})",
            f"faults at {emulator.url}/_sandbox/faults",
            f"kubeconfig {path}",
            f"export PIPELINE_KUBE_CONFIG={path}",
        ):
            console.print(line, soft_wrap=True, highlight=False)
        await stop.wait()
    finally:
        await emulator.close()


def _fault_config(text: str | None) -> FaultConfig | None:
    if text is None:
        return None
    try:
        raw = Path(text[1:]).read_bytes() if text.startswith("@") else text.encode()
        return FaultConfig.from_json(orjson.loads(raw))
    except (OSError, orjson.JSONDecodeError, ValueError) as exc:
        raise CliError(f"--faults: {exc}") from None
