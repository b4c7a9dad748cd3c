"""The sandbox's temporary work dir goes away on a clean stop and stays when it failed."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from pipeline.sandbox.dev import DevError, work_folder


@pytest.fixture(autouse=True)
def temp_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def test_a_clean_end_removes_it(temp_root: Path) -> None:
    with work_folder(None) as folder:
        (folder / "router.log").write_text("ok")
    assert not folder.exists()
    assert not list(temp_root.iterdir())


@pytest.mark.parametrize("stop", [KeyboardInterrupt, SystemExit])
def test_a_stop_removes_it(stop: type[BaseException]) -> None:
    with pytest.raises(stop), work_folder(None) as folder:
        raise stop()
    assert not folder.exists()


def test_a_failure_keeps_it_for_the_logs_the_error_names() -> None:
    with pytest.raises(DevError), work_folder(None) as folder:
        (folder / "reducer.log").write_text("Traceback ...")
        raise DevError(f"reducer exited; logs in {folder}")
    assert (folder / "reducer.log").read_text() == "Traceback ..."


def test_a_given_folder_is_never_removed(tmp_path: Path) -> None:
    given = tmp_path / "dev-logs"
    given.mkdir()
    with work_folder(given) as folder:
        assert folder == given
    assert given.is_dir()
