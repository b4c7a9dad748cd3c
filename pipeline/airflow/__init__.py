"""Airflow 3 executor: `[core] executor = pipeline.airflow.PipelineExecutor`.

Needs the `airflow` extra (`pip install 'kafka-task-pipeline[airflow]'`). A room of its own:
it meets the pipeline on the requests topic and the reducer's API, never by importing a stage.
"""

from pipeline.airflow.executor import PipelineExecutor

__all__ = ["PipelineExecutor"]
