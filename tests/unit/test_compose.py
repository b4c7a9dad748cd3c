"""The compose stack and Kubernetes manifests, checked without Docker or a cluster.

What can go wrong silently in deployment files: a misspelled env name (pydantic-settings
ignores unknown variables), a probe on a port nothing listens on, a stage nobody deploys,
RBAC wider than needed, a grace period shorter than the shutdown deadline.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from pipeline.cli.stages import STAGES
from pipeline.config import RuntimeSettings, Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_DIR = ROOT / "compose"
MANIFESTS_DIR = COMPOSE_DIR / "kubernetes"

# The stages the project documents (`pipeline run STAGE`).
DOCUMENTED_STAGES = {
    "router",
    "launcher",
    "watcher",
    "celery-dispatcher",
    "celery-monitor",
    "reducer",
}
ENV_NAME = re.compile(r"\bPIPELINE_[A-Z][A-Z0-9_]*")
POD_RBAC = {
    ("pods",): {"create", "get", "list", "watch", "delete", "deletecollection", "patch"},
    ("pods/log",): {"get"},
}


def setting_for(env_name: str) -> str | None:
    """The Settings field an env name sets (`kafka.bootstrap_servers`), or None if none.

    Mirrors the naming in pipeline.config: `PIPELINE_<FIELD>` for top-level fields,
    `PIPELINE_<GROUP>_<FIELD>` for a field of a settings group.
    """
    if not env_name.startswith("PIPELINE_"):
        return None
    name = env_name.removeprefix("PIPELINE_").lower()
    top = Settings.model_fields.get(name)
    if top is not None and not _is_group(top.annotation):
        return name
    group_name, _, field = name.partition("_")
    group = Settings.model_fields.get(group_name)
    if group is None or not _is_group(group.annotation) or not field:
        return None
    assert isinstance(group.annotation, type)
    return f"{group_name}.{field}" if field in group.annotation.model_fields else None


def _is_group(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def load_all(path: Path) -> list[dict[str, Any]]:
    with path.open() as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc is not None]


def compose() -> dict[str, Any]:
    (doc,) = load_all(COMPOSE_DIR / "docker-compose.yml")
    return doc


def manifests() -> list[dict[str, Any]]:
    return [doc for path in sorted(MANIFESTS_DIR.glob("*.yaml")) for doc in load_all(path)]


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in manifests() if doc["kind"] == kind]


def settings_map() -> dict[str, str]:
    (config_map,) = of_kind("ConfigMap")
    data: dict[str, str] = config_map["data"]
    return data


def runtime_port() -> int:
    default = RuntimeSettings.model_fields["http_port"].default
    return int(settings_map().get("PIPELINE_RUNTIME_HTTP_PORT", default))


def shutdown_deadline_s(env: dict[str, str]) -> float:
    default = RuntimeSettings.model_fields["shutdown_timeout_s"].default
    return float(env.get("PIPELINE_RUNTIME_SHUTDOWN_TIMEOUT_S", default))


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def only_container(workload: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = pod_spec(workload)["containers"]
    (container,) = containers
    return container


def stage_of(argv: list[str]) -> str | None:
    """The stage an argv runs (`["run", "router"]` -> "router"), or None for other commands."""
    return argv[1] if len(argv) == 2 and argv[0] == "run" else None


def manifest_stages() -> dict[str, dict[str, Any]]:
    stages = {}
    for deployment in of_kind("Deployment"):
        stage = stage_of(only_container(deployment)["args"])
        if stage is not None:
            stages[stage] = deployment
    return stages


def compose_stages() -> dict[str, dict[str, Any]]:
    stages = {}
    for service in compose()["services"].values():
        stage = stage_of(service.get("command", []))
        if stage is not None:
            stages[stage] = service
    return stages


# --- every file parses, the kustomization is complete ---


def test_every_yaml_file_parses_and_manifests_name_their_kind() -> None:
    files = sorted(COMPOSE_DIR.rglob("*.y*ml"))
    assert COMPOSE_DIR / "docker-compose.yml" in files
    for path in files:
        docs = load_all(path)
        assert docs, f"{path.name} is empty"
        if path.parent == MANIFESTS_DIR:
            assert all({"apiVersion", "kind"} <= doc.keys() for doc in docs), path.name


def test_kustomization_lists_exactly_the_manifest_files() -> None:
    (kustomization,) = load_all(MANIFESTS_DIR / "kustomization.yaml")
    on_disk = {p.name for p in MANIFESTS_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(on_disk)
    assert all(
        doc["metadata"].get("namespace", "task-pipeline") == "task-pipeline"
        for doc in manifests()
        if doc["kind"] != "Kustomization"
    )


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_kustomize_builds_the_manifests() -> None:
    built = subprocess.run(
        ["kubectl", "kustomize", str(MANIFESTS_DIR)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    kinds = [doc["kind"] for doc in yaml.safe_load_all(built) if doc]
    assert kinds.count("Deployment") == len(of_kind("Deployment"))


# --- env names ---


def test_setting_resolver_accepts_real_names_and_rejects_others() -> None:
    assert setting_for("PIPELINE_KAFKA_BOOTSTRAP_SERVERS") == "kafka.bootstrap_servers"
    assert setting_for("PIPELINE_RUNTIME_SHUTDOWN_TIMEOUT_S") == "runtime.shutdown_timeout_s"
    assert setting_for("PIPELINE_KUBERNETES_QUEUE") == "kubernetes_queue"
    for wrong in (
        "PIPELINE_KAFKA",
        "PIPELINE_KAFKA_BOOTSTRAP",
        "PIPELINE_NOPE_X",
        "PIPELINE_KUBERNETES",
        "KAFKA_NODE_ID",
        "PIPELINE_KUBE_CONFIG_PATH",
    ):
        assert setting_for(wrong) is None, wrong


def test_every_pipeline_env_name_in_compose_dir_is_a_setting() -> None:
    texts = [p.read_text() for p in COMPOSE_DIR.rglob("*") if p.is_file()]
    names = {name for text in texts for name in ENV_NAME.findall(text)}
    assert "PIPELINE_KAFKA_BOOTSTRAP_SERVERS" in names
    unknown = sorted(name for name in names if setting_for(name) is None)
    assert unknown == [], f"not a field of pipeline.config.Settings: {unknown}"


def environments() -> dict[str, dict[str, str]]:
    """Every PIPELINE_* environment a container gets: compose services and the ConfigMap."""
    envs = {
        f"compose:{name}": {k: str(v) for k, v in service.get("environment", {}).items()}
        for name, service in compose()["services"].items()
    }
    envs["configmap"] = settings_map()
    return {where: env for where, env in envs.items() if any(ENV_NAME.match(k) for k in env)}


@pytest.mark.parametrize("where", sorted(environments()))
def test_environment_values_load_into_settings(where: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("PIPELINE_")]:
        monkeypatch.delenv(name)
    env = environments()[where]
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    loaded = Settings()
    assert loaded.kafka.bootstrap_servers == env["PIPELINE_KAFKA_BOOTSTRAP_SERVERS"]
    assert loaded.runtime.http_port == int(env["PIPELINE_RUNTIME_HTTP_PORT"])


# --- stages ---


def test_compose_and_manifests_run_exactly_the_documented_stages() -> None:
    assert set(compose_stages()) == DOCUMENTED_STAGES
    assert set(manifest_stages()) == DOCUMENTED_STAGES


def test_every_registered_stage_is_deployed() -> None:
    assert set(STAGES) <= set(manifest_stages()), "a stage in STAGES has no Deployment"
    assert set(STAGES) <= set(compose_stages()), "a stage in STAGES has no compose service"


def test_scaling_replicas() -> None:
    replicas = {name: d["spec"]["replicas"] for name, d in manifest_stages().items()}
    for scaled in ("router", "launcher", "celery-dispatcher"):
        assert 2 <= replicas[scaled] <= 3, scaled
    assert replicas["watcher"] == 2
    assert replicas["reducer"] >= 1


# --- probes and ports ---


def container_port(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return int(number)


@pytest.mark.parametrize("stage", sorted(DOCUMENTED_STAGES))
def test_probes_hit_health_endpoints_on_the_runtime_port(stage: str) -> None:
    container = only_container(manifest_stages()[stage])
    liveness = container["livenessProbe"]["httpGet"]
    readiness = container["readinessProbe"]["httpGet"]
    assert (liveness["path"], readiness["path"]) == ("/healthz", "/readyz")
    assert container_port(container, liveness["port"]) == runtime_port()
    assert container_port(container, readiness["port"]) == runtime_port()


def test_reducer_service_targets_the_query_api_port() -> None:
    (service,) = of_kind("Service")
    container = only_container(manifest_stages()["reducer"])
    (port,) = service["spec"]["ports"]
    api_port = int(settings_map()["PIPELINE_REDUCER_API_PORT"])
    assert container_port(container, port["targetPort"]) == api_port
    selector = service["spec"]["selector"]
    assert selector.items() <= pod_labels(manifest_stages()["reducer"]).items()


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def test_compose_healthchecks_ask_the_runtime_port_for_readiness() -> None:
    for name, service in compose_stages().items():
        probe = " ".join(service["healthcheck"]["test"])
        assert "/readyz" in probe and "PIPELINE_RUNTIME_HTTP_PORT" in probe, name
    reducer = compose_stages()["reducer"]
    api_port = reducer["environment"]["PIPELINE_REDUCER_API_PORT"]
    assert any(str(p).endswith(f":{api_port}") for p in reducer["ports"])


# --- RBAC and security ---


def test_rbac_is_exactly_the_minimal_pod_role() -> None:
    kinds = {doc["kind"] for doc in manifests()}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding"}
    (role,) = of_kind("Role")
    rules = {tuple(r["resources"]): set(r["verbs"]) for r in role["rules"]}
    assert rules == POD_RBAC
    assert all(r["apiGroups"] == [""] for r in role["rules"])
    (binding,) = of_kind("RoleBinding")
    (account,) = of_kind("ServiceAccount")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": account["metadata"]["name"],
            "namespace": account["metadata"]["namespace"],
        },
    ]


def test_only_launcher_and_watcher_get_kubernetes_credentials() -> None:
    (account,) = of_kind("ServiceAccount")
    with_token = {
        only_container(w)["args"][-1]
        for w in of_kind("Deployment") + of_kind("Job")
        if pod_spec(w).get("automountServiceAccountToken", True)
    }
    assert with_token == {"launcher", "watcher"}
    for stage in ("launcher", "watcher"):
        assert (
            pod_spec(manifest_stages()[stage])["serviceAccountName"] == account["metadata"]["name"]
        )


def test_every_pod_runs_restricted() -> None:
    for workload in of_kind("Deployment") + of_kind("Job"):
        name, spec = workload["metadata"]["name"], pod_spec(workload)
        pod_security = spec["securityContext"]
        assert pod_security["runAsNonRoot"] is True, name
        assert pod_security.get("runAsUser", 1) != 0, name
        assert not {"hostNetwork", "hostPID", "hostIPC"} & spec.keys(), name
        assert all("hostPath" not in volume for volume in spec.get("volumes", [])), name
        for container in spec["containers"]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["capabilities"] == {"drop": ["ALL"]}, name
            assert not security.get("privileged", False), name
            assert {"requests", "limits"} <= container["resources"].keys(), name


def test_grace_periods_outlast_the_shutdown_deadline() -> None:
    deadline = shutdown_deadline_s(settings_map())
    for deployment in of_kind("Deployment"):
        grace = pod_spec(deployment)["terminationGracePeriodSeconds"]
        assert grace > deadline, deployment["metadata"]["name"]
    for name, service in compose_stages().items():
        grace_s = float(service["stop_grace_period"].removesuffix("s"))
        assert grace_s > shutdown_deadline_s(service["environment"]), name


# --- the compose wiring ---


def test_compose_dependencies_wait_on_health_or_completion() -> None:
    services = compose()["services"]
    for name, service in services.items():
        for dependency, rule in service.get("depends_on", {}).items():
            target = services[dependency]
            if rule["condition"] == "service_healthy":
                assert not target.get("healthcheck", {}).get("disable"), (name, dependency)
                assert "test" in target["healthcheck"], (name, dependency)
            else:
                assert rule["condition"] == "service_completed_successfully", (name, dependency)
                assert target["restart"] == "no", (name, dependency)


def test_compose_points_stages_at_its_own_kafka_redis_and_k3s() -> None:
    services = compose()["services"]
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert set(kafka["environment"]["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    advertised = kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert services["k3s"]["image"].startswith("rancher/k3s:")
    for name, service in services.items():
        env = service.get("environment", {})
        if "PIPELINE_KAFKA_BOOTSTRAP_SERVERS" in env:
            assert f"://{env['PIPELINE_KAFKA_BOOTSTRAP_SERVERS']}" in advertised, name
            assert env["PIPELINE_CELERY_BROKER_URL"].startswith("redis://redis:"), name


@pytest.mark.parametrize("stage", ["launcher", "watcher"])
def test_kube_stages_read_the_k3s_kubeconfig_from_a_mounted_volume(stage: str) -> None:
    services = compose()["services"]
    service = services[stage]
    kubeconfig = Path(service["environment"]["PIPELINE_KUBE_CONFIG"])
    mounts = dict(v.split(":")[:2] for v in service["volumes"])
    assert str(kubeconfig.parent) in mounts.values()
    volume = next(v for v, target in mounts.items() if target == str(kubeconfig.parent))
    writer = services["kubeconfig"]
    assert any(v.startswith(f"{volume}:") for v in writer["volumes"])
    assert service["depends_on"]["kubeconfig"]["condition"] == "service_completed_successfully"


# --- the image ---


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = (COMPOSE_DIR / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = "\n".join(lines).replace("\\\n", " ")
    return [
        (word, rest.strip())
        for word, _, rest in (line.partition(" ") for line in joined.splitlines() if line.strip())
    ]


def test_dockerfile_is_multi_stage_non_root_with_the_pipeline_entrypoint() -> None:
    instructions = dockerfile()
    froms = [rest for word, rest in instructions if word == "FROM"]
    assert len(froms) >= 2
    users = [rest for word, rest in instructions if word == "USER"]
    assert users and users[-1].split(":")[0].isdigit() and int(users[-1].split(":")[0]) > 0
    assert ("ENTRYPOINT", '["pipeline"]') in instructions
    env_text = " ".join(rest for word, rest in instructions if word in {"ENV", "ARG"})
    assert not re.search(r"PASSWORD|SECRET|TOKEN|PIPELINE_", env_text)


def test_dockerignore_keeps_what_the_dockerfile_copies() -> None:
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    kept = {line.removeprefix("!").rstrip("/") for line in ignore if line.startswith("!")}
    sources = {
        source
        for word, rest in dockerfile()
        if word == "COPY" and "--from" not in rest
        for source in rest.split()[:-1]
    }
    assert sources == kept
