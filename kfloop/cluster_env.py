"""The environment a kfloop container gets on a cluster: Kubernetes Secrets as env vars, and plain settings.

One place decides it, so the pipeline steps and the InferenceService containers mount the same secrets
under the same variable names (the names the config's :class:`~kfloop.config.SecretRef` entries give).
"""

from __future__ import annotations

from kfloop.config import Config, S3StorageConfig, SecretRef
from kfloop.config.features import RedisStore
from kfloop.config.storage import s3_endpoint

__all__ = ["plain_env", "secret_env_refs"]


def secret_env_refs(config: Config, *, online_store: bool, alerts: bool = False) -> list[SecretRef]:
    """The secrets a container needs as env vars: the S3 keys when the workspace is in S3, the Redis
    connection string when the container opens the online store, and the webhook URLs of alerts.webhooks
    when it sends notifications (``alerts``), and the OpenLineage backend's token (every step emits events). A
    reference without a Kubernetes Secret is left out: its variable must then come from somewhere else (e.g. the
    image or a local shell)."""
    refs: list[SecretRef] = []
    lineage = config.governance.lineage
    if lineage.transport == "http" and lineage.api_key is not None:
        refs.append(lineage.api_key)
    if isinstance(config.storage, S3StorageConfig):
        refs += [config.storage.access_key, config.storage.secret_key]
    store = config.features.online_store
    if online_store and isinstance(store, RedisStore) and store.secret:
        refs.append(store.secret)
    if alerts:
        refs += [hook.secret for hook in config.alerts.webhooks if hook.secret]
    unique = {ref.env: ref for ref in refs if ref.secret_name and ref.secret_key}  # one variable, one source
    return list(unique.values())


def plain_env(config: Config, *, online_store: bool) -> dict[str, str]:
    """Non-secret variables: Feast's S3 registry reads its endpoint from ``FEAST_S3_ENDPOINT_URL`` only."""
    endpoint = s3_endpoint(config.storage)
    return {"FEAST_S3_ENDPOINT_URL": endpoint} if online_store and endpoint else {}


def env_vars(config: Config, *, online_store: bool) -> list:
    """:func:`plain_env` and :func:`secret_env_refs` as Kubernetes ``V1EnvVar`` objects: each Secret as a
    ``secretKeyRef``, never its value (the pods the InferenceService and the train job run)."""
    from kubernetes.client import V1EnvVar, V1EnvVarSource, V1SecretKeySelector

    env = [V1EnvVar(name=k, value=v) for k, v in plain_env(config, online_store=online_store).items()]
    env += [
        V1EnvVar(
            name=ref.env,
            value_from=V1EnvVarSource(secret_key_ref=V1SecretKeySelector(name=ref.secret_name, key=ref.secret_key)),
        )
        for ref in secret_env_refs(config, online_store=online_store)
    ]
    return env
