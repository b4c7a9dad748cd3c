"""`pipeline celery-worker`: a real Celery worker that runs task commands from the queues."""

from __future__ import annotations

from typing import Annotated

import typer

from pipeline.cli.common import settings


def celery_worker(
    ctx: typer.Context,
    queues: Annotated[
        list[str] | None,
        typer.Option("--queue", "-Q", help="Queue to serve (repeatable); default from settings."),
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", "-c", min=1, help="Commands run at once.")
    ] = None,
    hostname: Annotated[
        str | None, typer.Option("--hostname", "-n", help="Node name, e.g. gpu1@%h.")
    ] = None,
    loglevel: Annotated[str, typer.Option("--loglevel", "-l", help="Celery log level.")] = "INFO",
) -> None:
    """Run a Celery worker (prefork pool) serving the configured queues until SIGTERM."""
    from pipeline.celery_bridge.worker import worker_app  # imported only when chosen

    config = settings(ctx)
    app = worker_app(config)
    argv = [
        "worker",
        "--queues", ",".join(queues or config.celery.queues),
        "--concurrency", str(concurrency or config.celery.worker_concurrency),
        "--loglevel", loglevel,
        "--pool", "prefork",
        "--without-gossip",
        "--without-mingle",
    ]  # fmt: skip
    if hostname:
        argv += ["--hostname", hostname]
    app.worker_main(argv)
