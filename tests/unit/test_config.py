"""Settings: the documented env names, TOML files, validation and secret masking."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from pipeline.config import ConfigError, Settings, load_settings, masked


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("PIPELINE_"):
            monkeypatch.delenv(name)


def test_the_env_names_in_the_design_reach_their_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_KAFKA_BOOTSTRAP_SERVERS", "kafka-1:9092,kafka-2:9092")
    monkeypatch.setenv("PIPELINE_KUBE_CONFIG", "/etc/kube/config")
    monkeypatch.setenv("PIPELINE_KUBE_NAMESPACE", "airflow")
    monkeypatch.setenv("PIPELINE_CELERY_BROKER_URL", "redis://redis:6379/3")
    monkeypatch.setenv("PIPELINE_CELERY_RESULT_BACKEND", "redis://redis:6379/4")
    monkeypatch.setenv("PIPELINE_KUBERNETES_QUEUE", "k8s")
    monkeypatch.setenv("PIPELINE_TOPIC_REQUESTS", "prod.requests")
    monkeypatch.setenv("PIPELINE_LAUNCHER_PARALLELISM", "7")
    monkeypatch.setenv("PIPELINE_ROUTER_ROUTES", '{"gpu": "kubernetes"}')
    settings = load_settings()
    assert settings.kafka.bootstrap_servers == "kafka-1:9092,kafka-2:9092"
    assert settings.kube.config == Path("/etc/kube/config")
    assert settings.kube.namespace == "airflow"
    assert settings.celery.broker_url.get_secret_value() == "redis://redis:6379/3"
    assert settings.celery.result_backend.get_secret_value() == "redis://redis:6379/4"
    assert settings.kubernetes_queue == "k8s"
    assert settings.topic.requests == "prod.requests"
    assert settings.launcher.parallelism == 7
    assert settings.router.routes == {"gpu": "kubernetes"}


def test_a_toml_file_sets_values_and_env_still_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "pipeline.toml"
    config.write_text('kubernetes_queue = "from-file"\n[launcher]\nparallelism = 3\n')
    monkeypatch.setenv("PIPELINE_LAUNCHER_PARALLELISM", "9")
    settings = load_settings(config)
    assert settings.kubernetes_queue == "from-file"
    assert settings.launcher.parallelism == 9


def test_invalid_values_become_one_line_config_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_LAUNCHER_PARALLELISM", "many")
    with pytest.raises(ConfigError, match=r"^invalid setting launcher.parallelism: .*integer"):
        load_settings()


@pytest.mark.parametrize(
    ("name", "value"),
    [("PIPELINE_KUBE_NAMESPACE", "Airflow"), ("PIPELINE_WATCHER_NAMESPACES", '["ok", "no_way"]')],
)
def test_a_namespace_kubernetes_would_refuse_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=r"^invalid setting \S*namespace\S*: '\w+' is not a nam"):
        load_settings()


def test_a_namespace_that_is_a_dns_label_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_KUBE_NAMESPACE", "airflow-prod-2")
    assert load_settings().kube.namespace == "airflow-prod-2"


def test_unknown_keys_in_a_file_are_refused(tmp_path: Path) -> None:
    config = tmp_path / "pipeline.toml"
    config.write_text("[launcher]\nparalelism = 3\n")
    with pytest.raises(ConfigError, match=r"launcher\.paralelism"):
        load_settings(config)


def test_a_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_masked_settings_never_show_a_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_KAFKA_SASL_PASSWORD", "kafka-s3cret")
    monkeypatch.setenv("PIPELINE_CELERY_BROKER_URL", "redis://user:redis-s3cret@redis:6379/0")
    shown = orjson.dumps(masked(load_settings())).decode()
    assert "s3cret" not in shown
    assert "redis://user:***@redis:6379/0" in shown


def test_updated_replaces_only_the_named_fields_and_leaves_the_original() -> None:
    settings = Settings()
    changed = settings.updated(topic={"events": "e2"}, launcher={"parallelism": 7})
    assert (changed.topic.events, changed.launcher.parallelism) == ("e2", 7)
    assert changed.topic.requests == settings.topic.requests
    assert (settings.topic.events, settings.launcher.parallelism) != ("e2", 7)
