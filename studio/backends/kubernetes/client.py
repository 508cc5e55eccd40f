"""The one module that talks to a Kubernetes API (the official ``kubernetes`` client): create-or-patch, delete with
propagation, reads of pods, logs and nodes. Manifests come in and go out as plain dicts; API errors leave as Cove
errors with the cause kept (``raise … from``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from studio.errors import BackendUnavailable, Conflict, CoveError, InvalidSpec, NotFound

# kind → (API class, the method suffix of its namespaced verbs, model class)
KINDS: dict[str, tuple[type[Any], str, type[Any]]] = {
    "Deployment": (client.AppsV1Api, "deployment", client.V1Deployment),
    "Service": (client.CoreV1Api, "service", client.V1Service),
    "HorizontalPodAutoscaler": (
        client.AutoscalingV2Api, "horizontal_pod_autoscaler", client.V2HorizontalPodAutoscaler,
    ),
    "PodDisruptionBudget": (client.PolicyV1Api, "pod_disruption_budget", client.V1PodDisruptionBudget),
    "Job": (client.BatchV1Api, "job", client.V1Job),
    "PersistentVolumeClaim": (client.CoreV1Api, "persistent_volume_claim", client.V1PersistentVolumeClaim),
    "Secret": (client.CoreV1Api, "secret", client.V1Secret),
}  # fmt: skip


def connect(
    *, kubeconfig: str = "", context: str = "", host: str = "", config_dict: Mapping[str, Any] | None = None
) -> client.ApiClient:
    """An API client from a kubeconfig file or its parsed text (``config_dict``, a registered cluster), its current
    or named context; the pod's service account when in a cluster; or a bare ``host`` (tests)."""
    configuration = client.Configuration()
    try:
        if host:
            configuration.host = host
        elif config_dict is not None:
            config.load_kube_config_from_dict(dict(config_dict), context=context or None,
                                              client_configuration=configuration)  # fmt: skip
        elif kubeconfig or context:
            config.load_kube_config(config_file=kubeconfig or None, context=context or None,
                                    client_configuration=configuration)  # fmt: skip
        else:
            try:
                config.load_incluster_config(client_configuration=configuration)
            except config.ConfigException:
                config.load_kube_config(client_configuration=configuration)
    except (config.ConfigException, OSError, KeyError, TypeError) as exc:
        raise BackendUnavailable(
            f"no Kubernetes cluster is configured: {exc}",
            hint="set COVE_KUBECONFIG (and COVE_KUBE_CONTEXT), or run Cove in the cluster with its service account",
        ) from exc
    configuration.retries = 1
    return client.ApiClient(configuration)


class KubeClient:
    """Namespaced verbs on plain dicts."""

    def __init__(self, api: client.ApiClient, namespace: str, *, timeout: float = 10) -> None:
        self.api, self.namespace, self.timeout = api, namespace, timeout
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)

    def in_namespace(self, namespace: str) -> KubeClient:
        """The same connection, working in another namespace."""
        return KubeClient(self.api, namespace, timeout=self.timeout)

    # ------------------------------------------------------------------------------------------------ objects

    def _verb(self, kind: str, verb: str) -> tuple[Callable[..., Any], type[Any]]:
        api_class, suffix, model = KINDS[kind]
        return getattr(api_class(self.api), f"{verb}_namespaced_{suffix}"), model

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        read, _ = self._verb(kind, "read")
        try:
            with self._errors(f"read {kind} {name}"):
                return self._plain(read(name, self.namespace, _request_timeout=self.timeout))
        except NotFound:
            return None

    def create(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        create, model = self._verb(manifest["kind"], "create")
        with self._errors(f"create {manifest['kind']} {manifest['metadata']['name']}"):
            body = model.from_dict(dict(manifest))
            return self._plain(create(self.namespace, body, _request_timeout=self.timeout))

    def patch(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """A strategic merge of ``manifest`` into the live object (lists such as containers are replaced)."""
        patch, _ = self._verb(manifest["kind"], "patch")
        name = manifest["metadata"]["name"]
        with self._errors(f"update {manifest['kind']} {name}"):
            return self._plain(patch(name, self.namespace, dict(manifest), _request_timeout=self.timeout))

    def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Create the object, or patch it when it exists."""
        try:
            return self.create(manifest)
        except Conflict:
            return self.patch(manifest)

    def delete(self, kind: str, name: str, *, propagation: str = "Foreground") -> bool:
        """Delete in the foreground (a Deployment's pods go before it does), or in the ``Background`` (the object at
        once, its pods after it); True when it was there."""
        delete, _ = self._verb(kind, "delete")
        options = client.V1DeleteOptions(propagation_policy=propagation)
        try:
            with self._errors(f"delete {kind} {name}"):
                delete(name, self.namespace, body=options, _request_timeout=self.timeout)
        except NotFound:
            return False
        return True

    def find(self, kind: str, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        """Objects of ``kind`` in the namespace carrying ``labels``."""
        api_class, suffix, _model = KINDS[kind]
        lister = getattr(api_class(self.api), f"list_namespaced_{suffix}")
        return self._items(f"list {kind} objects", lister, self.namespace, label_selector=_selector(labels))

    def deployments(self, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        return self.find("Deployment", labels)

    def pods(self, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        found = self._items(
            "list pods", self.core.list_namespaced_pod, self.namespace, label_selector=_selector(labels)
        )
        return sorted(found, key=lambda p: p["metadata"]["name"])

    def logs(self, pod: str, *, tail: int, container: str = "") -> list[str]:
        """The last ``tail`` lines of the pod's log: of ``container``, or of its one container when empty."""
        which: dict[str, Any] = {"container": container} if container else {}
        with self._errors(f"read the logs of pod {pod}" + (f" ({container})" if container else "")):
            text = self.core.read_namespaced_pod_log(
                pod, self.namespace, tail_lines=tail, _request_timeout=self.timeout, **which
            )
        return str(text).splitlines()

    def nodes(self) -> list[dict[str, Any]]:
        return self._items("list nodes", self.core.list_node)

    # ------------------------------------------------------------------------------------------------ helpers

    def _items(self, doing: str, lister: Callable[..., Any], *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        """A list call's items as the API sent them: JSON to dicts, skipping the client's models (a pass lists
        every pod of the namespace; building models and turning them back into dicts costs more than the call)."""
        with self._errors(doing):
            reply = lister(*args, _request_timeout=self.timeout, _preload_content=False, **kwargs)
            try:
                return list(json.loads(reply.data).get("items") or [])
            except ValueError as exc:
                raise BackendUnavailable(f"the Kubernetes API answered {doing} with something not JSON") from exc

    def _plain(self, obj: Any) -> dict[str, Any]:
        return dict(self.api.sanitize_for_serialization(obj))

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """API failures as Cove errors, in words, with the API's own message and the cause kept."""
        try:
            yield
        except ApiException as exc:
            raise _translated(exc, doing, self.namespace) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise BackendUnavailable(
                f"the Kubernetes API does not answer ({doing}): {exc}",
                hint="check that the cluster is up and that COVE_KUBECONFIG points at it",
            ) from exc


def _selector(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _translated(exc: ApiException, doing: str, namespace: str) -> CoveError:
    said = _api_message(exc)
    if exc.status == 404:
        return NotFound(f"cannot {doing}: not found in namespace {namespace}", hint=said)
    if exc.status == 409:
        return Conflict(f"cannot {doing}: {said}")
    if exc.status in (401, 403):
        return BackendUnavailable(
            f"Kubernetes refused to {doing} in namespace {namespace}: {said}",
            hint="Cove's service account needs the Role the Helm chart installs (rbac.create=true)",
        )
    if exc.status in (400, 422):
        return InvalidSpec(f"Kubernetes refused to {doing}: {said}")
    return BackendUnavailable(f"the Kubernetes API failed to {doing} (HTTP {exc.status}): {said}")


def _api_message(exc: ApiException) -> str:
    import json

    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.reason)
    except ValueError:
        return str(exc.reason)
