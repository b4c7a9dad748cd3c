"""Settings: one object, read from `PIPELINE_*` environment variables and an optional TOML file.

Groups map to env names as `PIPELINE_<GROUP>_<FIELD>`, e.g. `PIPELINE_KAFKA_BOOTSTRAP_SERVERS`,
`PIPELINE_TOPIC_REQUESTS`, `PIPELINE_LAUNCHER_PARALLELISM`. Values that are maps or lists are
given as JSON (`PIPELINE_ROUTER_ROUTES='{"gpu": "kubernetes"}'`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Final, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


class SettingsGroup(BaseModel):
    """A group of settings; unknown keys are errors, so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid")


class KafkaSettings(SettingsGroup):
    """How every stage reaches Kafka."""

    bootstrap_servers: str = Field("127.0.0.1:9092", description="Comma-separated host:port list.")
    client_id: str = Field("task-pipeline", description="Client id prefix sent to the broker.")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = Field(None, description="CA bundle to verify the brokers.")
    ssl_certfile: Path | None = Field(None, description="Client certificate for mutual TLS.")
    ssl_keyfile: Path | None = Field(None, description="Client key for mutual TLS.")
    request_timeout_ms: int = Field(30_000, ge=1000)
    enable_idempotence: bool = Field(
        False, description="Idempotent producer; needs broker support (the sandbox has none)."
    )
    linger_ms: int = Field(5, ge=0, description="Producer batching delay.")
    max_message_bytes: int = Field(1_000_000, ge=1024, description="Larger requests are rejected.")
    fetch_max_wait_ms: int = Field(
        500,
        ge=1,
        le=30_000,
        description="Longest a consumer's fetch waits for data (Kafka's default, 500). Real "
        "Kafka answers as soon as data is there; the sandbox broker holds every fetch this "
        "long, so each hop costs about half of it there (its profile uses a low value).",
    )
    follower_fetch_max_wait_ms: int = Field(
        500,
        ge=1,
        le=30_000,
        description="The same for consumers off the tasks' path, which only follow a topic "
        "(the launcher's cancel and launch-ledger followers, the Celery monitor between its "
        "polls, the reducer). On the sandbox broker every consumer pays one fetch round trip "
        "per wait, idle or not, so these wait longer. The ledger follower also frees the "
        "launcher's parallelism slots, so on that broker a slot comes free up to this long "
        "after its pod ended, which matters only while parallelism is full.",
    )
    session_timeout_ms: int = Field(
        10_000,
        ge=1000,
        description="Consumer group session: a member silent this long loses its partitions. "
        "A stage's own session_timeout_ms, when set, wins.",
    )
    heartbeat_interval_ms: int | None = Field(
        None,
        ge=100,
        description="Group heartbeat period; unset (or above it) means a third of the session.",
    )


class TopicSettings(SettingsGroup):
    """Topic names and how `pipeline topics create` makes them."""

    requests: str = "tasks.requests"
    kubernetes: str = "tasks.kubernetes"
    celery: str = "tasks.celery"
    events: str = "tasks.events"
    state: str = "tasks.state"
    dlq: str = "tasks.dlq"
    control: str = Field(
        "tasks.control", description="Cancel requests (TaskControl), keyed like the task."
    )
    logs: str = Field(
        "tasks.logs",
        description="Finished tries' captured output (TaskLog; compacted, keyed by full key).",
    )
    watcher_checkpoints: str = Field(
        "tasks.watcher-checkpoints",
        description="Where the pod watcher keeps its resourceVersion (compacted, keyed by watch).",
    )
    launches: str = Field(
        "tasks.launches",
        description="The launch ledger (compacted, keyed by task key and try): a try with a "
        "record there is never launched again.",
    )
    launches_retention_s: float = Field(
        7 * 24 * 3600.0,
        ge=0,
        description="How long the launch ledger remembers a try (its topic keeps records an "
        "eighth longer); a request submitted longer ago is not launched but failed, since "
        "whether it ran can no longer be told. 0: forever, and every launcher keeps every try.",
    )
    partitions: int = Field(6, ge=1, description="Partitions for new topics.")
    replication_factor: int = Field(1, ge=1)

    def all_names(self) -> list[str]:
        return [
            self.requests, self.kubernetes, self.celery, self.events, self.state, self.dlq,
            self.control, self.logs, self.watcher_checkpoints, self.launches,
        ]  # fmt: skip

    def compacted(self) -> set[str]:
        """Topics that hold the latest value per key, not a history."""
        return {self.state, self.logs, self.watcher_checkpoints, self.launches}

    def configs(self, name: str) -> dict[str, str]:
        """The topic configs `name` is created with."""
        if name == self.launches and self.launches_retention_s > 0:
            retention_ms = int(self.launches_retention_s * 1.125 * 1000)  # see LaunchLedger
            return {"cleanup.policy": "compact,delete", "retention.ms": str(retention_ms)}
        return {"cleanup.policy": "compact"} if name in self.compacted() else {}


_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def _dns_label(name: str) -> str:
    """A namespace name as Kubernetes takes it, refused here rather than by every create."""
    if len(name) > 63 or not _DNS_LABEL.fullmatch(name):
        raise ValueError(
            f"{name!r} is not a namespace name: use at most 63 lowercase letters, digits "
            "and '-', starting and ending with a letter or digit"
        )
    return name


Namespace = Annotated[str, AfterValidator(_dns_label)]


class KubeSettings(SettingsGroup):
    """How the launcher and watcher reach Kubernetes."""

    config: Path | None = Field(None, description="Kubeconfig path; unset means in-cluster.")
    context: str | None = Field(None, description="Kubeconfig context; unset means current.")
    namespace: Namespace = Field("default", description="Namespace worker pods are created in.")
    request_timeout_s: float = Field(30.0, gt=0)


class CelerySettings(SettingsGroup):
    """The Celery path: broker and result backend, worker command policy, dispatch, monitor."""

    broker_url: SecretStr = Field(
        SecretStr("redis://127.0.0.1:6379/0"),
        description="Celery broker: redis://..., or filesystem:// (no server; see the options).",
    )
    broker_transport_options: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra kombu transport options (JSON), over the defaults; filesystem:// "
        "needs data_folder_in and data_folder_out (the same folder on a single host).",
    )
    result_backend: SecretStr = Field(
        SecretStr("redis://127.0.0.1:6379/1"),
        description="Celery result backend, redis://... or db+sqlite:///PATH; also holds the "
        "dispatch and completion records.",
    )
    task_publish_max_retries: int = Field(
        3, ge=0, description="send_task retries after the first attempt before the task fails."
    )
    publish_retry_backoff_s: float = Field(
        0.5, gt=0, description="Delay before the first publish retry; doubles each retry."
    )
    stalled_task_timeout_s: float = Field(
        300.0, gt=0, description="A task sent but not started within this is stalled."
    )
    stalled_action: Literal["resend", "fail"] = Field(
        "resend", description="Stalled tasks are re-sent once (then failed), or failed at once."
    )
    execution_timeout_s: float = Field(
        3600.0, gt=0, description="A command running longer is killed and the task fails."
    )
    visibility_timeout_s: float = Field(
        7200.0,
        gt=0,
        description="Redis redelivers a task unacknowledged this long (a lost worker's task); "
        "on filesystem:// the monitor re-sends a task running this long. Must exceed "
        "execution_timeout_s or long tasks run twice.",
    )
    unacked_restore_interval_s: float = Field(
        10.0, gt=0, description="How often workers look for tasks past the visibility timeout."
    )
    rerun_lost_commands: bool = Field(
        False,
        description="A command whose worker died while it ran is run again (at-least-once); "
        "by default its try fails with the reason instead (at-most-once).",
    )
    command_path: str | None = Field(
        None, description="PATH for task commands; unset uses the worker's own PATH."
    )
    command_env: dict[str, str] = Field(
        default_factory=dict, description="Extra environment for every task command (JSON)."
    )
    queues: list[str] = Field(
        default_factory=lambda: ["default"], description="Queues `pipeline celery-worker` serves."
    )
    worker_concurrency: int = Field(4, ge=1, description="Commands one worker runs at once.")
    dispatch_concurrency: int = Field(8, ge=1, description="send_task calls in flight at once.")
    dispatch_batch_size: int = Field(100, ge=1, description="Requests fetched per batch.")
    dispatch_record_ttl_s: float = Field(
        7 * 24 * 3600.0, gt=0, description="How long a dispatch is remembered for de-duplication."
    )
    monitor_poll_interval_s: float = Field(
        1.0, gt=0, description="Seconds between bulk state fetches."
    )
    monitor_fetch_batch: int = Field(1000, ge=1, description="Task ids per MGET round trip.")
    dispatcher_group_id: str = Field(
        "pipeline-celery-dispatcher", description="Dispatchers sharing it split the partitions."
    )
    monitor_group_id: str = Field(
        "pipeline-celery-monitor", description="Monitors sharing it split the events partitions."
    )
    session_timeout_ms: int | None = Field(
        None,
        ge=1000,
        description="A dispatcher or monitor silent this long loses partitions; "
        "unset: kafka.session_timeout_ms.",
    )

    @model_validator(mode="after")
    def _visibility_outlasts_execution(self) -> CelerySettings:
        if self.visibility_timeout_s <= self.execution_timeout_s:
            raise ValueError("celery.visibility_timeout_s must exceed celery.execution_timeout_s")
        return self

    @model_validator(mode="after")
    def _filesystem_broker_has_folders(self) -> CelerySettings:
        if self.broker_url.get_secret_value().startswith("filesystem:"):
            missing = {"data_folder_in", "data_folder_out"} - set(self.broker_transport_options)
            if missing:
                names = ", ".join(sorted(missing))
                raise ValueError(f"celery.broker_transport_options needs {names} for filesystem://")
        return self


class RouterSettings(SettingsGroup):
    """Routing by `queue`: the kubernetes queue goes to Kubernetes, anything else to Celery."""

    routes: dict[str, Literal["kubernetes", "celery"]] = Field(
        default_factory=dict, description="Extra queue -> executor entries, JSON in env."
    )
    default_target: Literal["kubernetes", "celery"] | None = Field(
        "celery",
        description="Executor for queues not in the table; null (or empty) dead-letters them.",
    )
    batch_size: int = Field(500, ge=1, description="Records fetched per batch.")
    group_id: str = Field(
        "pipeline-router", description="Consumer group; routers sharing it split the partitions."
    )
    session_timeout_ms: int | None = Field(
        None,
        ge=1000,
        description="A router silent this long loses its partitions to the rest; "
        "unset: kafka.session_timeout_ms.",
    )

    @field_validator("default_target", mode="before")
    @classmethod
    def _null_from_env(cls, value: object) -> object:
        """An env var cannot hold JSON null, so `null`, `none` or empty mean no default."""
        return None if isinstance(value, str) and value.lower() in ("", "null", "none") else value


class LauncherSettings(SettingsGroup):
    creation_batch_size: int = Field(
        64, ge=1, description="Pod creations undecided at once (and requests fetched per cycle)."
    )
    max_concurrent_creates: int = Field(
        64,
        ge=1,
        description="Create calls in flight at once; this many divided by the API's latency "
        "bounds the launcher's rate, so it is sized for a slow API.",
    )
    parallelism: int = Field(128, ge=1, description="Launched-but-unfinished pods at most.")
    max_retries: int = Field(5, ge=0, description="Retries on 429/5xx/timeouts before failing.")
    pod_template_file: Path | None = None
    pod_mutation_hook: str | None = Field(None, description="module:function applied last.")
    worker_image: str = Field("python:3.12-slim", description="Image when a request names none.")
    pod_template_dir: Path | None = Field(
        None, description="Named templates (<name>.yaml) a request may pick via pod_template."
    )
    retry_base_s: float = Field(0.5, gt=0, description="First retry delay; doubles per retry.")
    retry_max_s: float = Field(30.0, gt=0, description="Longest delay between retries.")
    commit_interval_s: float = Field(0.2, gt=0, description="How often finished offsets commit.")
    cancel_grace_period_s: int | None = Field(
        None, ge=0, description="Grace period of a cancelled task's pod; unset: the pod's own."
    )
    group_id: str = Field("pipeline-launcher", description="Consumer group of the launchers.")
    session_timeout_ms: int | None = Field(
        None,
        ge=1000,
        description="Group session: how soon a dead launcher's share moves; "
        "unset: kafka.session_timeout_ms.",
    )


TASK_SDK_COMMAND: Final = (
    "python", "-m", "airflow.sdk.execution_time.execute_workload", "--json-string",
)  # fmt: skip
"""The argv prefix an Airflow 3 task runs with (the Task SDK's `execute_workload`)."""

DEFAULT_ALLOWED_COMMANDS: Final = (("airflow", "tasks", "run"), TASK_SDK_COMMAND)
"""Airflow 2's task command and Airflow 3's Task SDK; nothing else runs unless allowed."""


class SecuritySettings(SettingsGroup):
    """What a task may run and ask for; deny by default."""

    allowed_commands: list[list[str]] = Field(
        default_factory=lambda: [list(p) for p in DEFAULT_ALLOWED_COMMANDS],
        description="Allowed argv prefixes; JSON list of lists in env.",
    )
    allowed_image_registries: list[str] = Field(
        default_factory=list, description="Image prefixes allowed; empty allows any."
    )
    allow_privileged: bool = False
    allow_host_path: bool = False
    allow_host_namespaces: bool = False


class WatcherSettings(SettingsGroup):
    """The pod watcher: what it watches, how it resumes, and what it deletes."""

    pending_timeout_s: float = Field(
        300.0, gt=0, description="A pod Pending longer than this is deleted and its task fails."
    )
    pending_check_interval_s: float = Field(
        30.0, gt=0, description="How often the pending-timeout and cleanup sweep runs."
    )
    pending_check_batch: int = Field(100, ge=1, description="Pods examined per sweep, at most.")
    delete_pods: bool = Field(True, description="Delete pods whose task succeeded.")
    delete_pods_on_failure: bool = Field(
        False, description="Also delete pods whose task failed (kept for debugging otherwise)."
    )
    adopt_orphans: bool = Field(
        True,
        description="Watch every managed pod, whatever launcher instance made it; off watches "
        "only pods labelled with PIPELINE_RUNTIME_INSTANCE (which must then be set).",
    )
    namespaces: list[Namespace] = Field(
        default_factory=list, description="Empty: the kube namespace."
    )
    watch_timeout_s: int = Field(
        300, ge=1, description="Server-side timeout of one watch request; it then reconnects."
    )
    reconnect_backoff_s: float = Field(
        0.5, gt=0, description="First delay before reconnecting a failed watch; doubles."
    )
    reconnect_backoff_max_s: float = Field(30.0, gt=0, description="Ceiling of that delay.")
    checkpoint_interval_s: float = Field(
        2.0, gt=0, description="Checkpoint the watch's resourceVersion at most this often."
    )
    capture_logs: bool = Field(
        True,
        description="Keep the tail of each finished pod's log on the logs topic before the pod "
        "is deleted (logs.max_bytes of it).",
    )


class ReducerSettings(SettingsGroup):
    """The state reducer (a faust worker), its query API and the stuck-queued sweeper."""

    queued_timeout_s: float = Field(
        600.0, gt=0, description="Queued without launch this long: re-drive once, then fail."
    )
    sweep_interval_s: float = Field(
        30.0, gt=0, description="How often the sweeper and the retention pass look."
    )
    history_limit: int = Field(50, ge=1, description="Transitions kept per task state.")
    retention_s: float = Field(
        7 * 24 * 3600.0,
        ge=0,
        description="How long a finished try's state is kept after its last change: older "
        "ones are forgotten (a tombstone on the state topic), and a record older than this "
        "for a try no longer held is not folded, so memory holds this window's tries. "
        "0: forever.",
    )
    api_port: int = Field(8090, ge=1, le=65535, description="Query API port (faust web).")
    api_url: str | None = Field(
        None,
        description="Where this replica's API is reached by the other replicas and the CLI; "
        "defaults to http://127.0.0.1:<api_port>.",
    )
    app_id: str | None = Field(
        None, description="Faust app id and consumer group; defaults to reducer-<state topic>."
    )
    data_dir: Path | None = Field(None, description="Faust's data directory; default: a temp dir.")
    api_token: SecretStr | None = Field(
        None,
        description="Bearer token the API's cancel endpoint requires; unset means no token.",
    )
    session_timeout_s: float | None = Field(
        None,
        gt=0,
        le=90,
        description="Consumer group session timeout: a dead replica's partitions move after "
        "this long (the sandbox broker also holds a JoinGroup for half of it); unset: "
        "kafka.session_timeout_ms.",
    )


class LogsSettings(SettingsGroup):
    """Task output: how much of a finished try's log outlives its pod or worker."""

    max_bytes: int = Field(
        64 * 1024,
        ge=1024,
        le=512 * 1024,
        description="Newest bytes of a try's output kept on the logs topic (older are dropped).",
    )


class AirflowSettings(SettingsGroup):
    """The Airflow 3 executor (`pipeline.airflow.PipelineExecutor`), run inside the scheduler."""

    execution_api_url: str | None = Field(
        None,
        description="Airflow's Execution API (http://API-SERVER:8080/execution/) the Task SDK "
        "reports to; every task gets it as AIRFLOW__CORE__EXECUTION_API_SERVER_URL. Unset "
        "leaves it to the worker's own Airflow configuration.",
    )
    task_env: dict[str, str] = Field(
        default_factory=dict,
        description="Extra environment for every Airflow task (JSON), e.g. its AIRFLOW__ config.",
    )
    image: str | None = Field(
        None, description="Image of Airflow tasks' pods; unset uses launcher.worker_image."
    )
    publish_max_retries: int = Field(
        3, ge=0, description="Publish retries before a task is failed back to Airflow."
    )
    publish_retry_backoff_s: float = Field(
        0.5, gt=0, description="Delay before the first publish retry; doubles each retry."
    )
    lost_timeout_s: float = Field(
        300.0,
        gt=0,
        description="A task the reducer still has no record of this long after it was "
        "published is reported failed (lost), not left queued.",
    )
    api_timeout_s: float = Field(
        10.0, gt=0, description="Timeout of one call to the reducer's API from the scheduler."
    )


class UiSettings(SettingsGroup):
    """The web dashboard (`pipeline ui`): where it listens, what it reads, what it may do."""

    host: str = Field(
        "127.0.0.1", description="Listen address; loopback unless exposed on purpose."
    )
    port: int = Field(8070, ge=0, le=65535, description="Dashboard port; 0 picks a free one.")
    api_url: str | None = Field(
        None, description="The reducer query API it reads; defaults to the reducer's api_url."
    )
    actions: bool = Field(
        False,
        description="Allow cancel and redrive from the page (POST only, with the API token "
        "when one is set); off, the dashboard is read-only.",
    )
    stages: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Stage name -> base URLs of its replicas' runtime port (health, readiness), "
        "JSON in env; the Stages page probes them.",
    )
    push_interval_s: float = Field(1.0, gt=0, description="How often live pages get an update.")
    dead_letters_kept: int = Field(
        10_000, ge=1, description="Newest dead letters the dashboard keeps in memory to show."
    )


class RuntimeSettings(SettingsGroup):
    """What every stage process shares: health port, shutdown deadline, logging."""

    http_host: str = Field(
        "0.0.0.0",
        description="Bind address of the health/metrics port and the reducer's API: every "
        "interface for probes in a pod; `pipeline dev` binds 127.0.0.1.",
    )
    http_port: int = Field(8080, ge=0, le=65535, description="/healthz /readyz /metrics; 0 picks.")
    shutdown_timeout_s: float = Field(20.0, gt=0, description="Hard deadline for a clean stop.")
    startup_timeout_s: float = Field(
        120.0,
        gt=0,
        description="How long a stage retries (with backoff) while Kafka cannot be reached "
        "at start-up, before it exits with one line.",
    )
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"
    instance: str | None = Field(None, description="Instance id; defaults to hostname-pid.")


class Settings(BaseSettings):
    """The whole configuration. Precedence: init args, env, TOML file, defaults."""

    model_config = SettingsConfigDict(
        env_prefix="PIPELINE_",
        env_nested_delimiter="_",
        env_nested_max_split=1,
        extra="forbid",
    )

    kubernetes_queue: str = Field("kubernetes", description="Queue routed to Kubernetes.")
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topic: TopicSettings = Field(default_factory=TopicSettings)
    kube: KubeSettings = Field(default_factory=KubeSettings)
    celery: CelerySettings = Field(default_factory=CelerySettings)
    router: RouterSettings = Field(default_factory=RouterSettings)
    launcher: LauncherSettings = Field(default_factory=LauncherSettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    watcher: WatcherSettings = Field(default_factory=WatcherSettings)
    reducer: ReducerSettings = Field(default_factory=ReducerSettings)
    logs: LogsSettings = Field(default_factory=LogsSettings)
    airflow: AirflowSettings = Field(default_factory=AirflowSettings)
    ui: UiSettings = Field(default_factory=UiSettings)
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)

    toml_file: ClassVar[Path | None] = None

    def updated(self, **groups: Mapping[str, Any]) -> Settings:
        """A copy with some fields of some groups replaced: `updated(topic={"events": "x"})`."""
        return self.model_copy(
            update={name: getattr(self, name).model_copy(update=fields)
                    for name, fields in groups.items()}
        )  # fmt: skip

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: tuple[PydanticBaseSettingsSource, ...] = (init_settings, env_settings)
        if cls.toml_file is not None:
            sources += (TomlConfigSettingsSource(settings_cls, toml_file=cls.toml_file),)
        return sources


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Settings from env and, when given, a TOML file (raises ConfigError on bad input)."""
    if config_file is not None and not config_file.is_file():
        raise ConfigError(f"config file {config_file} does not exist")

    class _FromFile(Settings):
        toml_file = config_file

    try:
        loaded = _FromFile(**overrides) if config_file else Settings(**overrides)
    except ValueError as exc:
        raise ConfigError(_one_line(exc)) from None
    return loaded


class ConfigError(ValueError):
    """Configuration that cannot be used; the CLI prints it as one line and exits 2."""


def _one_line(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        message = str(first["msg"]).removeprefix("Value error, ")  # pydantic's, for our own
        return f"invalid setting {where}: {message}"
    return str(exc).splitlines()[0]


def mask_url(url: str) -> str:
    """A URL with its password hidden, safe to print or log."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def masked(settings: Settings) -> dict[str, Any]:
    """The effective configuration, safe to show: passwords never appear."""
    shown = settings.model_dump(mode="json")  # SecretStr fields dump as '**********'
    shown["celery"]["broker_url"] = mask_url(settings.celery.broker_url.get_secret_value())
    shown["celery"]["result_backend"] = mask_url(settings.celery.result_backend.get_secret_value())
    return shown
