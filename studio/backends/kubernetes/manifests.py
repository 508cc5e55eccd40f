"""Pure builders of the Kubernetes objects the backend makes: plain dicts in, plain dicts out, no client import,
no I/O, no mutation of their inputs. What a pod asks for and where it goes (GPUs, HAMi slices, placement, security)
is said in ``studio.pods``, shared with the notebook spawner."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePath, PurePosixPath
from typing import Any

from studio.backends.base import TaskSpec, WorkloadSpec
from studio.errors import InvalidSpec
from studio.pods import (
    cpu_quantity,
    gpu_annotations,
    memory_quantity,
    placement,
    resource_requirements,
    restricted_container_context,
    restricted_pod_context,
)
from studio.runtimes import CONTAINER_DATASETS_DIR, CONTAINER_MODELS_DIR, CONTAINER_PORT, UPSTREAM_KEY_ENV, Launch
from studio.values import Resources

# ------------------------------------------------------------------------------------------------ model servers

MANAGED_BY = "cove"
RELEASE_LABEL = "cove.dev/release"  # which installation made an object: each cleans up only its own
COMPONENT = "model-server"
UID = GID = 1000  # the runtime images' non-root user


@dataclass(frozen=True)
class Target:
    """Where and how model servers are made on a cluster (from the settings)."""

    namespace: str
    models_pvc: str
    datasets_pvc: str = ""
    start_timeout_s: float = 600
    image_pull_secret: str = ""
    release: str = ""  # COVE_RELEASE, labelled on every object made (not on model servers' pods: see ``_meta``)


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
    """An object's metadata, with its release's label. Pod templates do not carry it: adding it would restart every
    model server of an installation upgraded to a Cove that labels releases, and pods are found through their
    Deployment's name, which one namespace cannot hold twice."""
    return {"name": name, "namespace": target.namespace, "labels": labels(name) | released(target), **extra}


def released(target: Target) -> dict[str, str]:
    return {RELEASE_LABEL: target.release} if target.release else {}


def owned_by(obj: Mapping[str, Any], release: str) -> bool:
    """Whether ``release`` made ``obj``: its label says so, or it has none (made before releases were labelled, when
    one installation per namespace was assumed: it stays that one's)."""
    labelled = ((obj.get("metadata") or {}).get("labels") or {}).get(RELEASE_LABEL)
    return labelled is None or labelled == release


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
            "metadata": {
                "labels": labels(spec.name),
                "annotations": {"cove.dev/spec": spec.fingerprint} | gpu_annotations(spec.resources),
            },
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
    """A run-to-completion pod: a task (a fine-tune), an image build. ``queue`` submits it to a Kueue LocalQueue:
    it is created suspended with the queue's label, as Kueue asks, and Kueue unsuspends it once the queue's quota
    admits it. ``scratch`` gives it a read-only root filesystem with a writable /tmp and a memory-backed /dev/shm."""

    name: str
    image: str
    args: tuple[str, ...]
    command: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    workdir: str = ""
    resources: Resources = field(default_factory=Resources)
    node_selector: tuple[tuple[str, str], ...] = ()
    tolerations: tuple[Mapping[str, Any], ...] = ()
    volumes: tuple[tuple[str, str, str, bool], ...] = ()  # (volume name, claim, mount path, read-only)
    annotations: tuple[tuple[str, str], ...] = ()
    component: str = "job"
    queue: str = ""
    scratch: bool = False
    retries: int = 0
    keep_finished_s: int = 24 * 3600


QUEUE_LABEL = "kueue.x-k8s.io/queue-name"


def _pod_metadata(pod_labels: dict[str, str], resources: Resources) -> dict[str, Any]:
    annotations = gpu_annotations(resources)
    return {"labels": pod_labels} | ({"annotations": annotations} if annotations else {})


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
    if spec.workdir:
        container["workingDir"] = spec.workdir
    volumes: list[dict[str, Any]] = [
        {"name": v, "persistentVolumeClaim": {"claimName": claim, "readOnly": ro}}
        for v, claim, _path, ro in spec.volumes
    ]
    if spec.scratch:
        container["securityContext"] |= {"readOnlyRootFilesystem": True}
        container["volumeMounts"] += [{"name": "tmp", "mountPath": "/tmp"}, {"name": "shm", "mountPath": "/dev/shm"}]
        shm = memory_quantity(max(64, spec.resources.memory_mib // 4))  # data loaders share batches through it
        volumes += [
            {"name": "tmp", "emptyDir": {}},
            {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": shm}},
        ]
    metadata: dict[str, Any] = {
        "name": spec.name,
        "namespace": target.namespace,
        "labels": labels(spec.name, spec.component) | released(target),
    }
    if spec.queue:
        metadata["labels"][QUEUE_LABEL] = spec.queue
    if spec.annotations:
        metadata["annotations"] = dict(spec.annotations)
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [container],
        "volumes": volumes,
        "securityContext": restricted_pod_context(uid=UID, gid=GID),
        "automountServiceAccountToken": False,
        **placement(dict(spec.node_selector), spec.tolerations),
    }
    if spec.scratch:
        pod["enableServiceLinks"] = False
    if target.image_pull_secret:
        pod["imagePullSecrets"] = [{"name": target.image_pull_secret}]
    job_spec: dict[str, Any] = {
        "backoffLimit": spec.retries,
        "ttlSecondsAfterFinished": spec.keep_finished_s,
        "template": {"metadata": _pod_metadata(labels(spec.name, spec.component), spec.resources), "spec": pod},
    }
    if spec.queue:
        job_spec["suspend"] = True  # Kueue starts it: a Job that began running would bypass the queue's quota
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": job_spec}


# ------------------------------------------------------------------------------------------------ tasks

TASK = "task"  # the component label of task Jobs and their pods (builds are "image-build", servers "model-server")
DATASETS_DIR = CONTAINER_DATASETS_DIR  # where a task's pod finds the datasets claim (read-only)
TASK_ENV = (
    ("HF_HUB_CACHE", CONTAINER_MODELS_DIR),  # base models resolve in the model cache, as the runtimes load them
    ("HF_HUB_OFFLINE", "1"),
    ("HOME", "/tmp"),  # caches (torch, triton, datasets) on the writable scratch volume
)


def task(spec: TaskSpec, target: Target) -> dict[str, Any]:
    """The Job of one task (a fine-tune), from its ``TaskSpec``. The contract the control plane keeps:

    - every path it gives (``workdir``, paths in ``command``, ``env`` and in the files it writes there, such as
      plan.json) is a path *in the pod*: the models claim ``target.models_pvc`` is mounted read-write at
      ``/data/models`` (``runtimes.CONTAINER_MODELS_DIR``, where model servers find it read-only), the datasets claim
      ``target.datasets_pvc`` read-only at ``/data/datasets`` (``DATASETS_DIR``); ``pod_path`` translates the
      control plane's own paths;
    - ``workdir`` lies inside the models mount: it holds what the task is given and what it leaves (plan.json,
      checkpoints, result.json), and is the container's working directory;
    - the container runs ``command`` in ``image`` as uid/gid 1000 under Pod Security *restricted*, with
      ``HF_HUB_CACHE=/data/models``, ``HF_HUB_OFFLINE=1`` and ``HOME=/tmp`` (a read-only root filesystem; /tmp
      and /dev/shm are scratch) overridden by ``env``;
    - no retries (``backoffLimit: 0``): a resume is a new task the control plane starts, from checkpoints;
      the finished Job is removed after a week, so the control plane records how it ended before then;
    - the pool's resources (whole GPUs or a HAMi slice) and placement; with ``queue``, Kueue's queue label and
      created suspended.
    """
    env = dict(TASK_ENV) | dict(spec.env)
    volumes = [("models", target.models_pvc, CONTAINER_MODELS_DIR, False)]
    if target.datasets_pvc:
        volumes.append(("datasets", target.datasets_pvc, DATASETS_DIR, True))
    return job(
        JobSpec(
            name=spec.name, image=spec.image, args=spec.command[1:], command=spec.command[:1], env=tuple(env.items()),
            workdir=spec.workdir, resources=spec.resources, node_selector=spec.node_selector,
            tolerations=spec.tolerations, volumes=tuple(volumes), annotations=(("cove.dev/workdir", spec.workdir),),
            component=TASK, queue=spec.queue, scratch=True, retries=0, keep_finished_s=7 * 24 * 3600,
        ),
        target,
    )  # fmt: skip


def pod_path(path: str | PurePath, *, models_dir: str | PurePath, datasets_dir: str | PurePath) -> str:
    """Where a task's pod sees a file of the control plane's claims: ``models_dir/…`` (the control plane's mount of
    the models claim, ``Settings.models_dir``) is ``/data/models/…``, ``datasets_dir/…`` is ``/data/datasets/…``.
    Raises ``InvalidSpec`` for a path on neither claim (a task's pod cannot see it)."""
    wanted = PurePosixPath(path)
    for mine, theirs in ((models_dir, CONTAINER_MODELS_DIR), (datasets_dir, DATASETS_DIR)):
        if wanted == PurePosixPath(mine) or PurePosixPath(mine) in wanted.parents:
            return str(PurePosixPath(theirs) / wanted.relative_to(PurePosixPath(mine)))
    raise InvalidSpec(
        f"{path} is on neither the models claim ({models_dir}) nor the datasets claim ({datasets_dir})",
        hint="a task on Kubernetes can only read and write files on those claims",
    )


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


BUILD_CONTAINER = "build"  # the build pod's init container: Kaniko, running the Dockerfile, no credentials
PUSH_CONTAINER = "push"  # its one container: pushes what Kaniko left, with the push credentials only
PUSHER_UID = 65532  # the pusher image's non-root user (distroless "nonroot")
IMAGE_TAR = "/out/image.tar"


def image_build(
    name: str, target: Target, *, dockerfile: str, destination: str, push_secret: str, builder: str, pusher: str
) -> list[dict[str, Any]]:
    """A custom image built in the cluster: the Dockerfile in a Secret, built to ``destination`` by a Job whose pod
    keeps the Dockerfile's code and the push credentials apart. Returns [Secret, Job].

    - The init container ``build`` runs Kaniko (``builder``) with ``--no-push``: it runs the Dockerfile's ``RUN``
      steps in its own filesystem (GoogleContainerTools/kaniko#2153), so nothing secret is mounted there; it writes
      the image as a tarball to ``/out/image.tar`` on an emptyDir, named ``destination``.
    - The container ``push`` runs only after the build succeeded: ``pusher`` (crane) pushes that tarball to
      ``destination`` with the docker config of ``push_secret`` (a docker-config Secret; empty: a registry that
      takes anonymous pushes), as a non-root user with a read-only root filesystem. It runs no code of the user's.

    The build context is the Dockerfile alone; base images are pulled without credentials."""
    context = f"{name}-context"
    build = job(
        JobSpec(
            name=name, image=pusher, args=("push", IMAGE_TAR, destination), component="image-build",
            resources=Resources(cpu=1, memory_mib=512),
        ),
        target,
    )  # fmt: skip
    pod = build["spec"]["template"]["spec"]
    push = pod["containers"][0]
    push["name"] = PUSH_CONTAINER
    push["securityContext"] |= {"runAsUser": PUSHER_UID, "readOnlyRootFilesystem": True}
    push["volumeMounts"] = [{"name": "out", "mountPath": "/out", "readOnly": True}]
    kaniko: dict[str, Any] = {
        "name": BUILD_CONTAINER,
        "image": builder,
        "args": [
            "--dockerfile=/workspace/Dockerfile",
            "--context=dir:///workspace",
            f"--destination={destination}",  # names the image in the tarball; --no-push: nothing is sent
            "--no-push",
            f"--tar-path={IMAGE_TAR}",
            "--snapshot-mode=redo",
        ],
        "resources": resource_requirements(Resources(cpu=1, memory_mib=4096)),
        # Kaniko unpacks images as root inside its own container: the one pod Cove makes that is not *restricted*
        # (it meets *baseline*), so builds go to a namespace of their own (``target``).
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"], "add": ["CHOWN", "DAC_OVERRIDE", "FOWNER", "SETUID", "SETGID"]},
            "runAsUser": 0,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {"name": "context", "mountPath": "/workspace", "readOnly": True},
            {"name": "out", "mountPath": "/out"},
        ],
    }
    pod["initContainers"] = [kaniko]
    pod["securityContext"] = {"seccompProfile": {"type": "RuntimeDefault"}}
    pod["volumes"] = [{"name": "context", "secret": {"secretName": context}}, {"name": "out", "emptyDir": {}}]
    if push_secret:
        push["env"] = [{"name": "DOCKER_CONFIG", "value": "/docker"}]  # crane reads $DOCKER_CONFIG/config.json
        push["volumeMounts"].append({"name": "push", "mountPath": "/docker", "readOnly": True})
        docker_config = [{"key": ".dockerconfigjson", "path": "config.json"}]
        pod["volumes"].append({"name": "push", "secret": {"secretName": push_secret, "items": docker_config}})
    return [secret(context, target, {"Dockerfile": dockerfile}), build]
