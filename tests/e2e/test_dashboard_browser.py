"""The dashboard in a real headless Chromium against the pipeline as `pipeline dev` runs it.

Every page is used as an operator would: the overview moves while tasks run (no reload),
the table filters by URL and pages, a task shows its history, a dead letter is re-driven,
hostile task ids stay text, and a lost connection shows a banner. Each page is saved as a
screenshot (see tests/fixtures/browser.py).
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.parse import urlencode

import pytest
import pytest_asyncio
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select

from pipeline.kafka import make_producer, send_all, started
from pipeline.messages import (
    ErrorCode,
    InvalidMessage,
    TaskKey,
    encode,
    make_dead_letter,
    make_request,
)
from pipeline.sandbox.dev import DevEnvironment, DevOptions, dev_environment
from pipeline.sandbox.kube import Timings
from tests.fixtures.browser import text_of, until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(900),
    pytest.mark.asyncio(loop_scope="module"),
]

Shot = Callable[[WebDriver, str], Path]
RUN_S = 300.0
"""How long tasks may take to run to their end on a loaded two-core machine."""
HOSTILE_DAG = "<script>window.pwned=1</script>"
HOSTILE_TASK = '<img src=x onerror="window.pwned=2">'


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pipeline_env() -> AsyncIterator[DevEnvironment]:
    options = DevOptions(
        timings=Timings(pending_seconds=0.0, run_seconds=0.05, backoff_seconds=0.05),
        extra_env={"PIPELINE_UI_PUSH_INTERVAL_S": "0.5"},
    )
    async with dev_environment(options) as env:
        await env.wait_ready()
        yield env


async def submit(env: DevEnvironment, *requests: tuple[TaskKey, list[str], str]) -> None:
    kafka, topic = env.settings.kafka, env.settings.topic.requests
    records = [
        (topic, key.partition_key, encode(make_request(key, argv, queue)))
        for key, argv, queue in requests
    ]
    async with started(make_producer(kafka, "ui-test"), kafka) as producer:
        await send_all(producer, records)


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def task_url(env: DevEnvironment, key: TaskKey) -> str:
    query = {"dag_id": key.dag_id, "task_id": key.task_id, "run_id": key.run_id, "map_index": -1}
    return f"{env.dashboard_url}/task?{urlencode(query)}"


def first_link(driver: WebDriver) -> tuple[str, str]:
    """The first task row's link text and address (read together: the rows are live)."""
    link = driver.find_element(By.CSS_SELECTOR, "#task-rows tbody a")
    return str(link.text), str(link.get_attribute("href"))


def terminal(driver: WebDriver) -> int:
    return int(text_of(driver, "#state-success")) + int(text_of(driver, "#state-failed"))


def reloaded_until(driver: WebDriver, css: str) -> bool:
    """For pages that are not live (dead letters): reload until `css` is on the page."""
    if driver.find_elements(By.CSS_SELECTOR, css):
        return True
    driver.refresh()
    return False


async def test_overview_counts_and_charts_move_without_a_reload(
    pipeline_env: DevEnvironment, browser: WebDriver, screenshot: Shot
) -> None:
    browser.get(pipeline_env.dashboard_url + "/")
    await until(
        browser,
        lambda d: d.execute_script("return !!window.uPlot && !!document.querySelector('.uplot')"),
    )
    browser.execute_script("window.sameDocument = true")
    before = int(text_of(browser, "#total-tasks"))
    ended = terminal(browser)
    work = [
        (TaskKey("overview", f"t-{n}", "run-1"), python(f"import sys; sys.exit({n % 4 == 0:d})"),
         "kubernetes" if n % 2 else "default")
        for n in range(30)
    ]  # fmt: skip
    await submit(pipeline_env, *work)
    await until(browser, lambda d: int(text_of(d, "#total-tasks")) >= before + 30)
    finished = "return Number(document.getElementById('chart-throughput').dataset.finished || 0)"
    await until(browser, lambda d: d.execute_script(finished) > 0)
    await until(browser, lambda d: terminal(d) >= ended + 30, RUN_S)
    assert browser.execute_script("return window.sameDocument") is True, "the page reloaded"
    assert not browser.find_element(By.ID, "offline").is_displayed()
    screenshot(browser, "overview")


async def test_the_table_filters_by_url_and_pages(
    pipeline_env: DevEnvironment, browser: WebDriver, screenshot: Shot
) -> None:
    work = [(TaskKey("table", f"t-{n:02}", "run-t"), python("pass"), "default") for n in range(60)]
    await submit(pipeline_env, *work)
    browser.get(pipeline_env.dashboard_url + "/tasks")
    browser.find_element(By.NAME, "dag_id").send_keys("table")
    Select(browser.find_element(By.NAME, "state")).select_by_visible_text("success")
    browser.find_element(By.CSS_SELECTOR, "form.filters button").click()
    await until(
        browser, lambda d: "dag_id=table" in d.current_url and "state=success" in d.current_url
    )
    rows = "#task-rows tbody tr.state-success"
    await until(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, rows)) == 50, RUN_S)
    screenshot(browser, "tasks")
    # page 1 fills at the 50th success, the pager links on once a 51st has come, and the
    # live table may swap the link out between finding and clicking it: retried until done
    await until(browser, follow_next, RUN_S)
    await until(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, rows)) == 10)
    assert "page=2" in browser.current_url
    browser.get(pipeline_env.dashboard_url + "/tasks?q=t-07&dag_id=table")
    await until(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#task-rows tbody a")) == 1)


def follow_next(driver: WebDriver) -> bool:
    driver.find_element(By.CSS_SELECTOR, "a[rel=next]").click()
    return True


async def test_a_task_shows_its_history(
    pipeline_env: DevEnvironment, browser: WebDriver, screenshot: Shot
) -> None:
    key = TaskKey("detail", "printer", "run-d")
    code = "import time; print('hello from the task', flush=True); time.sleep(1)"
    await submit(pipeline_env, (key, python(code), "kubernetes"))
    browser.get(f"{pipeline_env.dashboard_url}/tasks?dag_id=detail")
    browser.get(await until(browser, lambda d: first_link(d)[1]))
    await until(browser, lambda d: "success" in text_of(d, "#try-1 h2"), RUN_S)
    steps = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#try-1 .timeline .state")]
    assert steps[0] == "queued" and steps[-1] == "success" and "running" in steps
    assert "from watcher" in text_of(browser, "#try-1 .timeline")
    await until(browser, lambda d: "hello from the task" in text_of(d, "#try-1 pre.log"), RUN_S)
    screenshot(browser, "task")


async def test_a_running_task_is_cancelled_from_its_page(
    pipeline_env: DevEnvironment, browser: WebDriver, screenshot: Shot
) -> None:
    key = TaskKey("cancel", "sleeper", "run-c")
    code = "import time; print('about to sleep', flush=True); time.sleep(120)"
    await submit(pipeline_env, (key, python(code), "kubernetes"))
    browser.get(task_url(pipeline_env, key))
    await until(browser, lambda d: "running" in text_of(d, "#try-1 h2"), RUN_S)
    await until(browser, lambda d: "about to sleep" in text_of(d, "#try-1 pre.log"), RUN_S)
    browser.find_element(By.CSS_SELECTOR, "#try-1 form.cancel input[name=reason]").send_keys(
        "<i>not needed</i>"
    )
    browser.find_element(By.CSS_SELECTOR, "#try-1 form.cancel button").click()
    await until(browser, lambda d: "cancelled" in text_of(d, "#try-1 h2"), RUN_S)
    assert "<i>not needed</i>" in text_of(browser, "#try-1")
    assert not browser.find_elements(By.CSS_SELECTOR, "#try-1 i, #try-1 form.cancel")
    screenshot(browser, "task-cancelled")


async def test_redrive_a_dead_letter(
    pipeline_env: DevEnvironment, browser: WebDriver, screenshot: Shot
) -> None:
    """A valid request that a stage once dead-lettered goes back and runs to success."""
    key = TaskKey("redrive", "again", "run-r")
    raw = encode(make_request(key, python("pass"), "default"))
    settings = pipeline_env.settings
    letter = make_dead_letter(
        raw, key.partition_key, InvalidMessage(ErrorCode.INTERNAL, "broker hiccup (test)"),
        topic=settings.topic.requests, partition=0, offset=0, timestamp=None, stage="router",
    )  # fmt: skip
    async with started(make_producer(settings.kafka, "ui-test"), settings.kafka) as producer:
        await send_all(producer, [(settings.topic.dlq, key.partition_key, encode(letter))])
    browser.get(pipeline_env.dashboard_url + "/dead-letters?reason=internal")
    box = "input[name=letter]"
    await until(browser, poll_s=1.0, condition=lambda d: reloaded_until(d, box))
    [row] = browser.find_elements(By.CSS_SELECTOR, "table.letters tbody tr")
    assert "redrive/again/run-r" in row.text
    row.find_element(By.CSS_SELECTOR, box).click()
    screenshot(browser, "dead-letters")
    browser.find_element(By.CSS_SELECTOR, "#redrive-form button[type=submit]").click()
    await until(browser, lambda d: "re-published 1" in text_of(d, "main"))
    browser.get(f"{pipeline_env.dashboard_url}/tasks?dag_id=redrive&state=success")
    await until(browser, lambda d: "redrive / again" in text_of(d, "#task-rows"), RUN_S)


async def test_a_task_id_holding_markup_shows_as_text(
    pipeline_env: DevEnvironment, browser: WebDriver, screenshot: Shot
) -> None:
    key = TaskKey(HOSTILE_DAG, HOSTILE_TASK, "run-x")
    code = "print('<b>bold?</b>', flush=True)"
    await submit(pipeline_env, (key, python(code), "kubernetes"))
    browser.get(pipeline_env.dashboard_url + "/tasks?" + urlencode({"q": "window.pwned"}))
    shown, href = await until(browser, first_link)
    assert shown == f"{HOSTILE_DAG} / {HOSTILE_TASK}"
    browser.get(href)
    await until(browser, lambda d: HOSTILE_DAG in text_of(d, "h1"))
    await until(browser, lambda d: "success" in text_of(d, "#try-1 h2"), RUN_S)
    assert browser.execute_script("return window.pwned") is None
    assert not browser.find_elements(By.CSS_SELECTOR, "main script, main img")
    screenshot(browser, "hostile-task-id")


async def test_the_stages_page_and_the_disconnected_banner(
    pipeline_env: DevEnvironment, browser: WebDriver, screenshot: Shot
) -> None:
    browser.get(pipeline_env.dashboard_url + "/stages")
    ready = "td.ok"
    assert len(browser.find_elements(By.CSS_SELECTOR, ready)) == 2 * 6, "6 stages healthy, ready"
    assert "consumer lag" in text_of(browser, "#stage-router")
    screenshot(browser, "stages")
    browser.get(pipeline_env.dashboard_url + "/")
    offline = browser.find_element(By.ID, "offline")
    dashboard = pipeline_env.processes.children["dashboard"]
    await dashboard.stop()
    await until(browser, lambda d: offline.is_displayed())
    screenshot(browser, "disconnected")
    await dashboard.start()
    await until(browser, lambda d: not offline.is_displayed())
