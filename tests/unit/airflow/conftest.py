"""Airflow reads its configuration on import: give it a home of its own, never the user's."""

import os
import tempfile

import pytest

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="pipeline-airflow-home-"))
pytest.importorskip("airflow", reason="needs the airflow extra")
