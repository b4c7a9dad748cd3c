"""A real Airflow 3 deployment running its DAGs through the pipeline.

`airflow db migrate`, then the api-server (with the Execution API), the dag-processor and the
scheduler as processes on SQLite, with `[core] executor = pipeline.airflow.PipelineExecutor`
and `pipeline dev`'s pipeline: the kubelet runs each pod's Task SDK command as a process, a
Celery worker runs the rest. One deployment serves every test in the module.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import sqlite3
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio

from pipeline.client import AsyncPipelineClient
from pipeline.messages import TERMINAL_STATES
from pipeline.sandbox.broker import free_port
from pipeline.sandbox.dev import DevEnvironment, DevOptions, dev_environment
from pipeline.sandbox.kube import Timings
from pipeline.sandbox.processes import ChildProcess
from tests.fixtures.polling import eventually

airflow = pytest.importorskip("airflow", reason="needs the airflow extra")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.airflow,
    pytest.mark.timeout(1500),
    pytest.mark.asyncio(loop_scope="module"),
]

DAGS = Path(__file__).parent / "airflow_dags"
AIRFLOW = [sys.executable, "-m", "airflow"]


@dataclass
class Deployment:
    pipeline: DevEnvironment
    home: Path
    env: dict[str, str]
    children: dict[str, ChildProcess]

    @property
    def database(self) -> Path:
        return self.home / "airflow.db"

    def rows(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        with sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=30) as db:
            db.row_factory = sqlite3.Row
            return list(db.execute(sql, args))

    def dag_run(self, dag_id: str) -> sqlite3.Row | None:
        found = self.rows("SELECT run_id, state FROM dag_run WHERE dag_id = ?", dag_id)
        return found[0] if found else None

    def task_instances(self, dag_id: str) -> dict[tuple[str, int], sqlite3.Row]:
        found = self.rows(
            "SELECT task_id, map_index, state, try_number, run_id FROM task_instance"
            " WHERE dag_id = ?",
            dag_id,
        )
        return {(r["task_id"], r["map_index"]): r for r in found}

    def assert_alive(self) -> None:
        dead = [c.name for c in self.children.values() if not c.running]
        dead += [c.name for c in self.pipeline.processes.exited()]
        assert not dead, f"{dead} exited; logs in {self.home} and {self.pipeline.work_dir}"

    async def airflow_cli(self, *args: str) -> None:
        process = await asyncio.create_subprocess_exec(
            *AIRFLOW, *args, env=self.env, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        output, _ = await process.communicate()
        assert process.returncode == 0, f"airflow {' '.join(args)}: {output.decode()[-2000:]}"

    async def wait_dag_run(self, dag_id: str, timeout_s: float) -> sqlite3.Row:
        async def finished() -> bool:
            self.assert_alive()
            run = self.dag_run(dag_id)
            return run is not None and run["state"] in ("success", "failed")

        await eventually(finished, timeout_s=timeout_s, interval_s=1.0)
        run = self.dag_run(dag_id)
        assert run is not None
        return run

    async def settled_tries(self, dag_id: str, run_id: str, count: int) -> list[dict[str, Any]]:
        """The pipeline's records of a run, once `count` of them are terminal: a try ends in
        Airflow when the task reports, in the pipeline when its process has exited."""
        tries: list[dict[str, Any]] = []
        async with AsyncPipelineClient(self.pipeline.api_url) as client:

            async def settled() -> bool:
                tries[:] = await client.tasks(dag_id=dag_id, run_id=run_id, limit=10_000)
                done = [t for t in tries if t["state"] in TERMINAL_STATES]
                return len(done) >= count

            await eventually(settled, timeout_s=300, interval_s=1.0)
        return tries


def airflow_env(home: Path, api_port: int) -> dict[str, str]:
    """What every Airflow process of the deployment shares (tasks get a subset)."""
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
    } | {
        "AIRFLOW__CORE__EXECUTOR": "pipeline.airflow.PipelineExecutor",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{api_port}/",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "600",
        "AIRFLOW__DAG_PROCESSOR__DAG_FILE_PROCESSOR_TIMEOUT": "600",
        "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "10",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD": "10",
    }


PATIENT_TASKS = {
    "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60",
    "AIRFLOW__WORKERS__EXECUTION_API_RETRIES": "10",
    "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "600",
}
"""A loaded 2-core machine answers slowly and imports slowly; a task must wait, not give up."""


def task_env(shared: dict[str, str]) -> dict[str, str]:
    """A task process needs its home, the DAGs and the Execution API; not the database."""
    names = ("AIRFLOW_HOME", "AIRFLOW__CORE__DAGS_FOLDER", "AIRFLOW__CORE__LOAD_EXAMPLES",
             "AIRFLOW__LOGGING__BASE_LOG_FOLDER")  # fmt: skip
    return {name: shared[name] for name in names} | PATIENT_TASKS


@pytest.fixture(scope="module")
def venv_on_path() -> Iterator[None]:
    """`python` in the Task SDK argv must be this interpreter, for pods and Celery alike."""
    saved = os.environ["PATH"]
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{saved}"
    yield
    os.environ["PATH"] = saved


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def deployment(
    venv_on_path: None, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Deployment]:
    home = tmp_path_factory.mktemp("airflow-home")
    api_port = free_port()
    shared = airflow_env(home, api_port)
    options = DevOptions(
        kube_mode="process",
        timings=Timings(pending_seconds=0.0, run_seconds=0.05, backoff_seconds=0.05),
        extra_env={"PIPELINE_CELERY_COMMAND_PATH": os.environ["PATH"]},
    )
    async with dev_environment(options) as pipeline:
        await pipeline.wait_ready()
        settings = pipeline.settings
        env = {
            **os.environ,
            **shared,
            "PIPELINE_KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
            "PIPELINE_REDUCER_API_URL": pipeline.api_url,
            "PIPELINE_AIRFLOW_EXECUTION_API_URL": shared["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"],
            "PIPELINE_AIRFLOW_TASK_ENV": orjson.dumps(task_env(shared)).decode(),
        }
        deployment = Deployment(pipeline, home, env, {})
        await deployment.airflow_cli("db", "migrate")
        for name, args in {
            "api-server": ["api-server", "--port", str(api_port)],
            "dag-processor": ["dag-processor"],
            "scheduler": ["scheduler"],
        }.items():
            child = ChildProcess(name, [*AIRFLOW, *args], env, home / f"{name}.log")
            await child.start()
            deployment.children[name] = child
        try:
            yield deployment  # tasks wait for the api-server themselves (PATIENT_TASKS)
        finally:
            for child in deployment.children.values():
                await child.stop(timeout_s=20.0)


EXPECTED = {
    ("on_kubernetes", -1): ("success", 1, "kubernetes"),
    ("on_celery", -1): ("success", 1, "celery"),
    ("mapped", 0): ("success", 1, "kubernetes"),
    ("mapped", 1): ("success", 1, "kubernetes"),
    ("mapped", 2): ("success", 1, "kubernetes"),
    ("flaky", -1): ("success", 2, "kubernetes"),
    ("overridden", -1): ("success", 1, "kubernetes"),
    ("broken", -1): ("failed", 1, "celery"),
}


async def test_a_dag_runs_through_the_pipeline(deployment: Deployment) -> None:
    run = await deployment.wait_dag_run("pipeline_e2e", timeout_s=1200)
    tis = deployment.task_instances("pipeline_e2e")
    got = {k: (r["state"], r["try_number"]) for k, r in tis.items()}
    assert got == {k: (state, tries) for k, (state, tries, _) in EXPECTED.items()}
    assert run["state"] == "failed"  # `broken` fails for good, so the run does

    wanted = {(task, index, n) for (task, index), (_, last, _) in EXPECTED.items()
              for n in range(1, last + 1)}  # fmt: skip
    tries = await deployment.settled_tries("pipeline_e2e", run["run_id"], len(wanted))
    per_try = Counter(
        (t["key"]["task_id"], t["key"]["map_index"], t["key"]["try_number"]) for t in tries
    )
    assert set(per_try) == wanted
    assert set(per_try.values()) == {1}  # one record per (key, try)
    executors = {(t["key"]["task_id"], t["key"]["map_index"]): t["executor"] for t in tries}
    assert executors == {k: executor for k, (_, _, executor) in EXPECTED.items()}
    assert all(t["state"] in ("success", "failed") for t in tries)  # the process outcome
    flaky_pods = {t["pod_name"] for t in tries if t["key"]["task_id"] == "flaky"}
    assert len(flaky_pods) == 2  # two tries, two pods


async def test_a_scheduler_killed_mid_run_is_replaced_and_no_task_runs_twice(
    deployment: Deployment,
) -> None:
    """SIGKILL the scheduler while tasks run; a new one adopts them (or sees them end): every
    TI succeeds on its first try and every command ran exactly once."""
    await deployment.airflow_cli("dags", "unpause", "pipeline_restart")

    async def all_running() -> bool:
        deployment.assert_alive()
        tis = deployment.task_instances("pipeline_restart")
        return len(tis) == 3 and all(r["state"] == "running" for r in tis.values())

    await eventually(all_running, timeout_s=600, interval_s=0.5)
    scheduler = deployment.children["scheduler"]
    scheduler.kill_group()
    assert scheduler.process is not None
    await scheduler.process.wait()
    await scheduler.start()

    run = await deployment.wait_dag_run("pipeline_restart", timeout_s=600)
    assert run["state"] == "success"
    tis = deployment.task_instances("pipeline_restart")
    assert {k: (r["state"], r["try_number"]) for k, r in tis.items()} == {
        ("slow_pod", 0): ("success", 1),
        ("slow_pod", 1): ("success", 1),
        ("slow_celery", -1): ("success", 1),
    }
    scheduler_log = (deployment.home / "scheduler.log").read_text()
    assert re.search(r"adopted [1-9]\d* task instances, returned 0", scheduler_log), (
        "the new scheduler adopted the running tries and returned none to be run again"
    )
    runs = deployment.home / "runs"
    assert {f.name: f.read_text() for f in runs.iterdir()} == {
        "pod-0": "1\n", "pod-1": "1\n", "celery": "1\n",
    }  # fmt: skip
