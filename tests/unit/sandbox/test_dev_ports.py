"""`pipeline dev` takes the documented default ports when they are free, else free ones."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from pipeline.config import KafkaSettings, ReducerSettings
from pipeline.sandbox import dev
from pipeline.sandbox.broker import EPHEMERAL_RANGE, free_port
from pipeline.sandbox.dev import DevOptions, port_or_free, stage_env


def test_the_defaults_are_the_settings_defaults() -> None:
    assert KafkaSettings().bootstrap_servers == f"127.0.0.1:{dev.DEFAULT_BROKER_PORT}"
    assert ReducerSettings().api_port == dev.DEFAULT_API_PORT


@pytest.mark.skipif(not EPHEMERAL_RANGE.exists(), reason="the kernel's range is Linux's")
def test_a_free_port_lies_below_the_range_outgoing_connections_take_ports_from() -> None:
    low = int(EPHEMERAL_RANGE.read_text().split()[0])
    ports = {free_port() for _ in range(20)}
    assert all(1024 <= port < low for port in ports)
    for port in ports:
        with socket.socket() as server:
            server.bind(("127.0.0.1", port))  # still free: nothing else was handed it


def test_a_free_preferred_port_is_taken_and_a_bound_one_is_not() -> None:
    port = free_port()
    assert port_or_free(port) == port
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        other = port_or_free(port)
    assert other != port


def test_the_api_port_is_the_default_only_when_asked_and_free(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    preferred = free_port()
    monkeypatch.setattr(dev, "DEFAULT_API_PORT", preferred)

    def api_port(**options: bool) -> int:
        env = stage_env("127.0.0.1:1", tmp_path / "kubeconfig", DevOptions(**options))
        return int(env["PIPELINE_REDUCER_API_PORT"])

    assert api_port(default_ports=True) == preferred
    assert api_port(default_ports=False) != preferred
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", preferred))
        assert api_port(default_ports=True) != preferred


def test_stages_bind_loopback_in_the_sandbox(tmp_path: Path) -> None:
    env = stage_env("127.0.0.1:1", tmp_path / "kubeconfig", DevOptions())
    assert env["PIPELINE_RUNTIME_HTTP_HOST"] == "127.0.0.1"
