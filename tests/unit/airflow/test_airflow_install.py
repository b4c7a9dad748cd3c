"""The airflow extra installs an Airflow whose api-server can start: its Execution API, which
every Task SDK process reports to, builds with the FastAPI and pydantic the extra resolves
(FastAPI 0.156.1 and later broke it for Airflow 3.2; the extra pins below that)."""

from __future__ import annotations


def test_the_execution_api_app_builds() -> None:
    from airflow.api_fastapi.execution_api.app import create_task_execution_api_app
    from fastapi import FastAPI

    assert isinstance(create_task_execution_api_app(), FastAPI)  # raised on the broken pins
