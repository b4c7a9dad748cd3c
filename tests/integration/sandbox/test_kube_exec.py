"""`pods/exec` over WebSocket: the official client's `stream()` (v4) and the protocol itself
(v5, as kubectl speaks it; kubectl's own runs are in test_kubectl.py)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from kubernetes import client
from kubernetes.stream import stream

from pipeline.sandbox.kube import KubeEmulator, Mode
from tests.fixtures.kube import (
    core_v1_for,
    emulator_on_pipeline_loop,
    phase_reached,
    pod_manifest,
    watch_until,
)

pytestmark = pytest.mark.integration
NS = "default"
V5 = "v5.channel.k8s.io"


@pytest.fixture(params=["test loop", "pipeline loop"])
async def process_emulator(request: pytest.FixtureRequest) -> AsyncIterator[KubeEmulator]:
    """On the test's asyncio loop, and on the loop the pipeline's processes run (uvloop):
    they start a command's process differently (`_take_terminal` says how)."""
    if request.param == "test loop":
        async with KubeEmulator(port=0, mode="process") as emulator:
            yield emulator
    else:
        async with emulator_on_pipeline_loop(port=0, mode="process") as emulator:
            yield emulator


async def running_pod(emulator: KubeEmulator, name: str, **env: str) -> client.CoreV1Api:
    """A pod whose one container (`base`) sleeps, Running; the client that made it."""
    api = core_v1_for(emulator)
    body = pod_manifest(name, command=["sleep", "60"])
    body["spec"]["containers"][0]["env"] = [{"name": k, "value": v} for k, v in env.items()]
    created = await asyncio.to_thread(api.create_namespaced_pod, NS, body)
    rv = created.metadata.resource_version
    await watch_until(api, phase_reached(name, "Running"), resource_version=rv)
    return api


def exec_url(emulator: KubeEmulator, pod: str, *argv: str, **options: str) -> str:
    params = "&".join([*(f"command={a}" for a in argv), *(f"{k}={v}" for k, v in options.items())])
    return f"{emulator.url}/api/v1/namespaces/{NS}/pods/{pod}/exec?{params}"


async def session(
    ws: aiohttp.ClientWebSocketResponse, *sends: bytes
) -> tuple[dict[int, bytes], dict[str, Any]]:
    """Send `sends`, then read every channel's bytes until the final Status (channel 3)."""
    for sent in sends:
        await ws.send_bytes(sent)
    channels: dict[int, bytes] = {}
    async for message in ws:
        assert message.type == aiohttp.WSMsgType.BINARY
        channels[message.data[0]] = channels.get(message.data[0], b"") + message.data[1:]
    return channels, orjson.loads(channels.pop(3))


async def test_the_official_client_streams_output_and_the_exit_code(
    process_emulator: KubeEmulator,
) -> None:
    api = await running_pod(process_emulator, "client-exec", GREETING="hello")

    def run(argv: list[str]) -> tuple[str, int | None]:
        response = stream(
            api.connect_get_namespaced_pod_exec,
            "client-exec",
            NS,
            command=argv,
            stdout=True,
            stderr=True,
            stdin=False,
            tty=False,
            _preload_content=False,
        )
        response.run_forever(timeout=30)
        return response.read_stdout(), response.returncode

    assert await asyncio.to_thread(run, ["sh", "-c", "echo $GREETING"]) == ("hello\n", 0)
    assert await asyncio.to_thread(run, ["sh", "-c", "exit 4"]) == ("", 4)


async def test_the_official_clients_text_input_reaches_the_command(
    process_emulator: KubeEmulator,
) -> None:
    """`write_stdin` with a `str`, as the client's own example does, goes as a text frame."""
    api = await running_pod(process_emulator, "text-stdin")

    def run() -> tuple[str, int | None]:
        response = stream(
            api.connect_get_namespaced_pod_exec,
            "text-stdin",
            NS,
            command=["head", "-n", "1"],
            stdin=True,
            stdout=True,
            stderr=True,
            tty=False,
            _preload_content=False,
        )
        response.write_stdin("typed as text\n")
        response.run_forever(timeout=30)
        return response.read_stdout(), response.returncode

    assert await asyncio.to_thread(run) == ("typed as text\n", 0)


async def test_a_command_that_cannot_start_ends_with_an_internal_error(
    process_emulator: KubeEmulator,
) -> None:
    await running_pod(process_emulator, "no-command")
    url = exec_url(process_emulator, "no-command", "no-such-command", stdout="true")
    async with aiohttp.ClientSession() as http, http.ws_connect(url, protocols=(V5,)) as ws:
        _, status = await session(ws)
    assert (status["status"], status["reason"], status["code"]) == ("Failure", "InternalError", 500)
    assert status["message"].startswith('exec: "no-such-command": ')
    assert status["details"]["causes"] == [{"message": status["message"]}]


async def test_stdin_ends_with_the_close_signal(process_emulator: KubeEmulator) -> None:
    await running_pod(process_emulator, "stdin-exec")
    url = exec_url(process_emulator, "stdin-exec", "cat", stdin="true", stdout="true")
    async with aiohttp.ClientSession() as http, http.ws_connect(url, protocols=(V5,)) as ws:
        assert ws.protocol == V5
        channels, status = await session(ws, b"\x00one\n", b"\x00two\n", b"\xff\x00")
    assert channels[1] == b"one\ntwo\n"
    assert status == {"metadata": {}, "status": "Success"}


async def test_a_terminal_session_takes_resizes(process_emulator: KubeEmulator) -> None:
    await running_pod(process_emulator, "tty-exec")
    url = exec_url(process_emulator, "tty-exec", "sh", stdin="true", stdout="true", tty="true")
    resize = b"\x04" + orjson.dumps({"Width": 91, "Height": 33})
    async with aiohttp.ClientSession() as http, http.ws_connect(url, protocols=(V5,)) as ws:
        channels, status = await session(ws, resize, b"\x00stty size; tty; exit 7\n")
    shown = channels[1].decode()
    assert "33 91\r\n" in shown and "/dev/pts/" in shown
    assert status["reason"] == "NonZeroExitCode"
    assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "7"}]


async def test_a_terminal_takes_more_input_than_it_buffers(
    process_emulator: KubeEmulator,
) -> None:
    await running_pod(process_emulator, "tty-bulk")
    url = exec_url(process_emulator, "tty-bulk", "wc", "-c", stdin="true", stdout="true", tty="1")
    lines = b"x" * 999 + b"\n"
    typed = [b"\x00" + lines * 10 for _ in range(30)]  # 300 kB, far past a terminal's buffer
    async with aiohttp.ClientSession() as http, http.ws_connect(url, protocols=(V5,)) as ws:
        channels, status = await session(ws, *typed, b"\x00\x04")
    assert channels[1].rstrip().endswith(b"300000")
    assert status["status"] == "Success"


async def test_a_client_that_leaves_ends_the_command(process_emulator: KubeEmulator) -> None:
    await running_pod(process_emulator, "gone-exec")
    url = exec_url(process_emulator, "gone-exec", "sh", "-c", "echo $$; exec sleep 60", stdout="1")
    async with aiohttp.ClientSession() as http, http.ws_connect(url, protocols=(V5,)) as ws:
        first = await ws.receive_bytes()
        process = os.pidfd_open(int(first[1:]))  # readable once the process has exited
    ended = asyncio.Event()
    asyncio.get_running_loop().add_reader(process, ended.set)
    try:  # the emulator sees the close, then SIGKILLs the process group
        await asyncio.wait_for(ended.wait(), 10)
    finally:
        asyncio.get_running_loop().remove_reader(process)
        os.close(process)


async def test_deleting_the_pod_ends_its_exec_sessions(process_emulator: KubeEmulator) -> None:
    api = await running_pod(process_emulator, "deleted-exec")
    url = exec_url(process_emulator, "deleted-exec", "sleep", "60", stdout="true")
    async with aiohttp.ClientSession() as http, http.ws_connect(url, protocols=(V5,)) as ws:
        await asyncio.to_thread(
            api.delete_namespaced_pod, "deleted-exec", NS, grace_period_seconds=0
        )
        _, status = await session(ws)
    assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "137"}]


@pytest.mark.parametrize(
    ("mode", "query", "message"),
    [
        ("simulate", "command=true", "exec needs the sandbox kubelet in process mode"),
        ("process", "", "you must specify at least one command"),
        ("process", "command=true", "Upgrade request required"),
        ("process", "command=true&container=other", "container other is not valid"),
    ],
)
async def test_an_exec_that_cannot_run_is_a_bad_request(
    mode: Mode, query: str, message: str
) -> None:
    async with KubeEmulator(port=0, mode=mode) as emulator:
        await running_pod(emulator, "refused")
        url = f"{emulator.url}/api/v1/namespaces/{NS}/pods/refused/exec?{query}"
        async with aiohttp.ClientSession() as http, http.post(url) as response:
            status = await response.json()
    assert response.status == 400
    assert message in status["message"]


async def test_exec_into_a_finished_container_is_refused(process_emulator: KubeEmulator) -> None:
    api = core_v1_for(process_emulator)
    created = await asyncio.to_thread(
        api.create_namespaced_pod, NS, pod_manifest("finished", command=["true"])
    )
    rv = created.metadata.resource_version
    await watch_until(api, phase_reached("finished", "Succeeded"), resource_version=rv)
    url = exec_url(process_emulator, "finished", "true", stdout="true")
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        status = await response.json()
    assert (response.status, status["message"]) == (
        400,
        'unable to upgrade connection: container not found ("base")',
    )
