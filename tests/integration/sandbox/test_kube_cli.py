"""`pipeline sandbox kube` in the foreground: prints its kubeconfig, serves, stops on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys

import pytest
import typer
from kubernetes import client, config
from typer.testing import CliRunner

from pipeline.cli.common import CliError
from pipeline.cli.sandbox_kube import kube

pytestmark = pytest.mark.integration

LAUNCH = "import typer; from pipeline.cli.sandbox_kube import kube; typer.run(kube)"


async def test_foreground_emulator_serves_its_kubeconfig_and_exits_on_sigterm() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", LAUNCH, "--port", "0", "--mode", "off", "--token", "t0k",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    try:
        kubeconfig = ""
        while not kubeconfig:
            line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
            assert line, "the emulator exited before printing its kubeconfig"
            if line.startswith("kubeconfig "):
                kubeconfig = line.split(" ", 1)[1].strip()
        configuration = client.Configuration()
        config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        api = client.CoreV1Api(client.ApiClient(configuration))
        pods = await asyncio.to_thread(api.list_namespaced_pod, "default")
    finally:
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), 30)
    assert pods.items == []
    assert code == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--mode", "bogus"], "--mode must be one of"), (["--faults", "{nope"], "--faults")],
)
def test_bad_input_is_a_cli_error(args: list[str], message: str) -> None:
    app = typer.Typer()
    app.command()(kube)
    result = CliRunner().invoke(app, args)
    assert isinstance(result.exception, CliError)
    assert message in str(result.exception)
