"""The official Kubernetes client, configured from settings: one place for both pod stages."""

from __future__ import annotations

from kubernetes import client, config

from pipeline.config import KubeSettings


def client_configuration(kube: KubeSettings, pool_size: int | None = None) -> client.Configuration:
    """A fresh Configuration (never the global default): the kubeconfig when set, else the
    in-cluster service account. urllib3's own retries are off: each stage's backoff decides."""
    cfg = client.Configuration()
    if kube.config is not None:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(kube.config),
            context=kube.context,
            client_configuration=cfg,
            persist_config=False,
        )
    else:
        config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    cfg.retries = False
    if pool_size is not None:
        cfg.connection_pool_maxsize = max(pool_size, 1)
    return cfg
