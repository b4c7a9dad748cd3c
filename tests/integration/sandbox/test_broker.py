"""The sandbox broker leaves nothing behind when it stops."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from pipeline.sandbox.broker import tansu_broker

pytestmark = pytest.mark.integration


def test_its_temporary_log_folder_goes_with_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with tansu_broker() as broker:
        assert broker.log_path.parent.name.startswith("pipeline-broker-")
        assert broker.log_path.parent.parent == tmp_path
    assert broker.process.returncode is not None
    assert not list(tmp_path.iterdir())


def test_a_given_log_folder_keeps_the_log(tmp_path: Path) -> None:
    with tansu_broker(log_dir=tmp_path) as broker:
        pass
    assert broker.log_path.parent == tmp_path
    assert broker.log_path.exists()
