"""The restricted Pod Security Standard as kfloop's pods wear it, defined once for every builder (the
InferenceService, the CronWorkflows, the Helm chart's values).

Every kfloop container runs as the image's non-root user (``cluster.run_as_user``), without privilege
escalation or capabilities, under the RuntimeDefault seccomp profile, on a read-only root filesystem with an
emptyDir at ``/tmp`` (the image's ``TMPDIR`` and working directory: the one writable place).
"""

from __future__ import annotations

from typing import Any

from kubernetes.client import (
    V1Capabilities,
    V1EmptyDirVolumeSource,
    V1PodSecurityContext,
    V1SeccompProfile,
    V1SecurityContext,
    V1Volume,
    V1VolumeMount,
)

__all__ = [
    "POD_LABEL",
    "TMP_DIR",
    "TMP_SIZE",
    "TMP_VOLUME",
    "container_security_context",
    "pod_security_context",
    "tmp_mount",
    "tmp_volume",
]

#: On every kfloop pod (serving, jobs, Redis, Feast): the Helm chart's network policies select pods by it.
POD_LABEL = "app.kubernetes.io/part-of"
TMP_DIR = "/tmp"
TMP_SIZE = "1Gi"
TMP_VOLUME = "tmp"


def pod_security_context(uid: int) -> V1PodSecurityContext:
    """Pod level: non-root ``uid`` (also the group and the volumes' group), RuntimeDefault seccomp."""
    return V1PodSecurityContext(
        run_as_non_root=True,
        run_as_user=uid,
        run_as_group=uid,
        fs_group=uid,
        seccomp_profile=V1SeccompProfile(type="RuntimeDefault"),
    )


def container_security_context() -> V1SecurityContext:
    """Container level: no escalation, every capability dropped, read-only root filesystem."""
    return V1SecurityContext(
        run_as_non_root=True,
        allow_privilege_escalation=False,
        read_only_root_filesystem=True,
        capabilities=V1Capabilities(drop=["ALL"]),
        seccomp_profile=V1SeccompProfile(type="RuntimeDefault"),
    )


def tmp_volume() -> V1Volume:
    """The scratch emptyDir, bounded so a runaway writer is evicted instead of filling the node."""
    return V1Volume(name=TMP_VOLUME, empty_dir=V1EmptyDirVolumeSource(size_limit=TMP_SIZE))


def tmp_mount() -> V1VolumeMount:
    return V1VolumeMount(name=TMP_VOLUME, mount_path=TMP_DIR)


def as_manifest(model: Any) -> Any:
    """A kubernetes client model as the API takes it (camelCase keys, no nulls)."""
    from kubernetes.client import ApiClient

    return ApiClient().sanitize_for_serialization(model)
