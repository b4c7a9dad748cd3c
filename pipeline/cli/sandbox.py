"""`pipeline sandbox …`: run pieces of the embedded dev environment in the foreground."""

from __future__ import annotations

import signal
import threading
from typing import Annotated

import typer

from pipeline.cli.common import console
from pipeline.cli.sandbox_kube import Host, Port, kube
from pipeline.sandbox.broker import tansu_broker
from pipeline.sandbox.profile import sandbox_env

sandbox_app = typer.Typer(help="Run the embedded dev environment's parts.", no_args_is_help=True)


@sandbox_app.command("broker")
def broker(
    port: Port = 9092,
    host: Host = "127.0.0.1",
    storage: Annotated[
        str, typer.Option("--storage", help="memory://tansu/ or s3://BUCKET/ (durable).")
    ] = "memory://tansu/",
) -> None:
    """Run a Kafka-protocol broker (Tansu) until Ctrl-C or SIGTERM."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with tansu_broker(port or None, host=host, storage=storage) as running:
        console.print(f"broker listening on {running.bootstrap_servers} (log {running.log_path})")
        console.print(f"export PIPELINE_KAFKA_BOOTSTRAP_SERVERS={running.bootstrap_servers}")
        for name, value in sandbox_env().items():
            console.print(f"export {name}={value}")
        try:
            while not stop.wait(0.5):
                if running.process.poll() is not None:
                    raise typer.Exit(1)
        except KeyboardInterrupt:
            pass


sandbox_app.command("kube")(kube)
