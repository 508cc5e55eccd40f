"""Pure builders of the Kubernetes objects the backend makes: plain dicts in, plain dicts out, no client import,
no I/O, no mutation of their inputs. What a pod asks for and where it goes (GPUs, HAMi slices, placement, security)
is said in ``studio.pods``, shared with the notebook spawner."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from studio.backends.base import WorkloadSpec
from studio.pods import (
    cpu_quantity,
    memory_quantity,
    placement,
    resource_requirements,
    restricted_container_context,
    restricted_pod_context,
)
from studio.runtimes import CONTAINER_MODELS_DIR, CONTAINER_PORT, UPSTREAM_KEY_ENV, Launch
from studio.values import Resources

# ------------------------------------------------------------------------------------------------ model servers

MANAGED_BY = "cove"
COMPONENT = "model-server"
UID = GID = 1000  # the runtime images' non-root user


@dataclass(frozen=True)
class Target:
    """Where and how model servers are made on a cluster (from the settings)."""

    namespace: str
    models_pvc: str
    start_timeout_s: float = 600
    image_pull_secret: str = ""


def labels(name: str, component: str = COMPONENT) -> dict[str, str]:
    """Every object of one deployment carries these; ``selector`` picks its pods."""
    return {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }


def selector(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/instance": name, "app.kubernetes.io/managed-by": MANAGED_BY}


def _meta(name: str, target: Target, **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": target.namespace, "labels": labels(name), **extra}


def _probe(path: str, *, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }


def model_server(spec: WorkloadSpec, launch: Launch, target: Target, *, replicas: int | None = None) -> dict[str, Any]:
    """The Deployment of one Cove deployment: its runtime's container on the pool's nodes with what the pool
    admitted, the model cache mounted read-only (never downloaded per pod), probes on the runtime's health path
    (a startup probe allows ``start_timeout_s`` for loading weights), *restricted* security. ``replicas`` None leaves
    the count to an autoscaler."""
    period = 10
    container: dict[str, Any] = {
        "name": "runtime",
        "image": spec.image,
        "ports": [{"name": "http", "containerPort": CONTAINER_PORT, "protocol": "TCP"}],
        "env": [
            *({"name": k, "value": v} for k, v in sorted(launch.env.items())),
            {"name": UPSTREAM_KEY_ENV, "valueFrom": {"secretKeyRef": {"name": key_secret(spec.name), "key": "key"}}},
        ],
        "resources": resource_requirements(spec.resources),
        "volumeMounts": [
            {"name": "models", "mountPath": CONTAINER_MODELS_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},  # an emptyDir: the root filesystem stays read-only
            {"name": "shm", "mountPath": "/dev/shm"},
        ],
        "startupProbe": _probe(
            spec.health_path, period=period, failures=max(1, math.ceil(target.start_timeout_s / period))
        ),
        "readinessProbe": _probe(spec.health_path, period=5, failures=3),
        "livenessProbe": _probe(spec.health_path, period=15, failures=4),
        "securityContext": restricted_container_context() | {"readOnlyRootFilesystem": True},
    }
    if launch.argv:
        container["command"] = list(launch.argv[:1])
        container["args"] = list(launch.argv[1:])
    elif spec.args:
        container["args"] = list(spec.args)
    pod: dict[str, Any] = {
        "containers": [container],
        "volumes": [
            {"name": "models", "persistentVolumeClaim": {"claimName": target.models_pvc, "readOnly": True}},
            {"name": "tmp", "emptyDir": {}},
            {
                "name": "shm",
                "emptyDir": {"medium": "Memory", "sizeLimit": memory_quantity(max(64, spec.resources.memory_mib // 4))},
            },
        ],
        "securityContext": restricted_pod_context(uid=UID, gid=GID),
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 30,
        **placement(dict(spec.node_selector), spec.tolerations),
    }
    if target.image_pull_secret:
        pod["imagePullSecrets"] = [{"name": target.image_pull_secret}]
    deployment_spec: dict[str, Any] = {
        "selector": {"matchLabels": selector(spec.name)},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
        "template": {
            "metadata": {"labels": labels(spec.name), "annotations": {"cove.dev/spec": spec.fingerprint}},
            "spec": pod,
        },
    }
    if replicas is not None:
        deployment_spec["replicas"] = replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(spec.name, target, annotations={"cove.dev/spec": spec.fingerprint}),
        "spec": deployment_spec,
    }


def key_secret(name: str) -> str:
    """The Secret holding the key deployment ``name``'s model servers ask callers for (``runtimes.upstream_key``)."""
    return f"{name}-key"


def service(name: str, target: Target) -> dict[str, Any]:
    """A stable in-cluster address for a deployment's ready replicas."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(name, target),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(name),
            "ports": [{"name": "http", "port": CONTAINER_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def autoscaler(name: str, target: Target, *, lo: int, hi: int, inflight_per_replica: float) -> dict[str, Any]:
    """An ``autoscaling/v2`` HPA on requests in flight per replica: the gateway's
    ``cove_gateway_requests_in_flight{deployment=NAME}``, an External metric served to the HPA by a metrics adapter
    (prometheus-adapter), divided by the replica count (AverageValue). Scales down no faster than one replica a
    minute."""
    metric = {"name": "cove_gateway_requests_in_flight", "selector": {"matchLabels": {"deployment": name}}}
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _meta(name, target),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": lo,
            "maxReplicas": hi,
            "metrics": [
                {
                    "type": "External",
                    "external": {
                        "metric": metric,
                        "target": {"type": "AverageValue", "averageValue": cpu_quantity(inflight_per_replica)},
                    },
                }
            ],
            "behavior": {
                "scaleDown": {
                    "stabilizationWindowSeconds": 60,
                    "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
                }
            },
        },
    }


def disruption_budget(name: str, target: Target) -> dict[str, Any]:
    """Voluntary evictions (node drains) take at most one replica at a time."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(name, target),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(name)}},
    }


# ------------------------------------------------------------------------------------------------ jobs, storage


@dataclass(frozen=True)
class JobSpec:
    """A run-to-completion pod: a fine-tune, an image build."""

    name: str
    image: str
    args: tuple[str, ...]
    command: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    resources: Resources = field(default_factory=Resources)
    node_selector: tuple[tuple[str, str], ...] = ()
    tolerations: tuple[Mapping[str, Any], ...] = ()
    volumes: tuple[tuple[str, str, str, bool], ...] = ()  # (volume name, claim, mount path, read-only)
    component: str = "job"
    retries: int = 0
    keep_finished_s: int = 24 * 3600


def job(spec: JobSpec, target: Target) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": spec.component,
        "image": spec.image,
        "args": list(spec.args),
        "env": [{"name": k, "value": v} for k, v in spec.env],
        "resources": resource_requirements(spec.resources),
        "volumeMounts": [{"name": v, "mountPath": path, "readOnly": ro} for v, _claim, path, ro in spec.volumes],
        "securityContext": restricted_container_context(),
    }
    if spec.command:
        container["command"] = list(spec.command)
    metadata = {"name": spec.name, "namespace": target.namespace, "labels": labels(spec.name, spec.component)}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            "backoffLimit": spec.retries,
            "ttlSecondsAfterFinished": spec.keep_finished_s,
            "template": {
                "metadata": {"labels": labels(spec.name, spec.component)},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [container],
                    "volumes": [
                        {"name": v, "persistentVolumeClaim": {"claimName": claim, "readOnly": ro}}
                        for v, claim, _path, ro in spec.volumes
                    ],
                    "securityContext": restricted_pod_context(uid=UID, gid=GID),
                    "automountServiceAccountToken": False,
                    **placement(dict(spec.node_selector), spec.tolerations),
                },
            },
        },
    }


def claim(name: str, target: Target, *, size: str, storage_class: str = "", shared: bool = False) -> dict[str, Any]:
    """A PersistentVolumeClaim; ``shared`` ones (the model cache) are ReadWriteMany so every node can mount them."""
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteMany" if shared else "ReadWriteOnce"],
        "resources": {"requests": {"storage": size}},
    }
    if storage_class:
        spec["storageClassName"] = storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _meta(name, target),
        "spec": spec,
    }


def secret(name: str, target: Target, data: Mapping[str, str]) -> dict[str, Any]:
    """An Opaque Secret from plain strings (the API encodes them)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(name, target),
        "type": "Opaque",
        "stringData": dict(sorted(data.items())),
    }


def image_build(
    name: str, target: Target, *, dockerfile: str, destination: str, push_secret: str, builder: str
) -> list[dict[str, Any]]:
    """A custom image built in the cluster: the Dockerfile in a Secret, built and pushed to ``destination`` by a
    Kaniko Job with the registry credentials ``push_secret`` (a docker-config Secret; empty: a registry that takes
    anonymous pushes). The build context is the Dockerfile alone. Returns [Secret, Job]."""
    context = f"{name}-context"
    build = job(
        JobSpec(
            name=name,
            image=builder,
            args=(
                "--dockerfile=/workspace/Dockerfile",
                "--context=dir:///workspace",
                f"--destination={destination}",
                "--snapshot-mode=redo",
            ),
            component="image-build",
            resources=Resources(cpu=1, memory_mib=4096),
        ),
        target,
    )
    pod = build["spec"]["template"]["spec"]
    box = pod["containers"][0]
    # Kaniko unpacks images as root inside its own container: the one pod Cove makes that is not *restricted* (it
    # meets *baseline*), so builds go to a namespace of their own (``target``).
    box["securityContext"] = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"], "add": ["CHOWN", "DAC_OVERRIDE", "FOWNER", "SETUID", "SETGID"]},
        "runAsUser": 0,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    pod["securityContext"] = {"seccompProfile": {"type": "RuntimeDefault"}}
    box["volumeMounts"] = [{"name": "context", "mountPath": "/workspace", "readOnly": True}]
    pod["volumes"] = [{"name": "context", "secret": {"secretName": context}}]
    if push_secret:
        box["volumeMounts"].append({"name": "push", "mountPath": "/kaniko/.docker", "readOnly": True})
        docker_config = [{"key": ".dockerconfigjson", "path": "config.json"}]
        pod["volumes"].append({"name": "push", "secret": {"secretName": push_secret, "items": docker_config}})
    return [secret(context, target, {"Dockerfile": dockerfile}), build]
