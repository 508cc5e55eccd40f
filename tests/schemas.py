"""Offline validation of Kubernetes manifests against the API's OpenAPI schemas (kubernetes-validate's bundled
JSON schemas, strict: unknown fields are errors), plus what those schemas cannot see: object names and quantities.

One validator per kind is built once and reused (~1 ms a manifest). ``problems`` returns every error, so a failing
test shows them all at once.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping
from typing import Any

import jsonschema
import kubernetes_validate.utils as kv
from referencing import Registry, Resource

KUBERNETES = "1.33"  # the oldest cluster version Cove supports
DNS_1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
QUANTITY = re.compile(r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$")


@functools.cache
def _validator(kind: str, api_version: str) -> jsonschema.protocols.Validator:
    version = [v for v in kv.all_versions() if kv.major_minor(v) <= KUBERNETES][-1]
    folder = f"kubernetes-json-schema/v{version}-local-strict"
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    schema = kv.schema_contents(f"{folder}/{kind.lower()}-{group_version}.json", KUBERNETES)
    definitions = kv.schema_contents(f"{folder}/_definitions.json", KUBERNETES)
    registry: Registry[Any] = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.Draft202012Validator(schema, registry=registry)


def problems(manifest: Mapping[str, Any]) -> list[str]:
    """Everything wrong with one manifest, in words ("spec.containers.0.resources.limits.cpu: …")."""
    found = [
        f"{'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
        for e in _validator(manifest["kind"], manifest["apiVersion"]).iter_errors(dict(manifest))
    ]
    name = manifest.get("metadata", {}).get("name", "")
    if not DNS_1123_SUBDOMAIN.match(name) or len(name) > 253:
        found.append(f"metadata.name: {name!r} is not a valid object name")
    for path, value in _quantities(manifest):
        if not QUANTITY.match(str(value)):
            found.append(f"{path}: {value!r} is not a quantity")
    return found


def _quantities(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Values under ``resources.requests/limits`` and PVC ``storage`` requests."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            here = f"{path}.{key}" if path else str(key)
            if key in {"requests", "limits", "capacity"} and isinstance(value, Mapping):
                yield from ((f"{here}.{k}", v) for k, v in value.items() if not isinstance(v, Mapping))
            yield from _quantities(value, here)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _quantities(item, f"{path}.{i}")


def assert_valid(*manifests: Mapping[str, Any]) -> None:
    report = {f"{m['kind']}/{m.get('metadata', {}).get('name')}": problems(m) for m in manifests}
    bad = {k: v for k, v in report.items() if v}
    assert not bad, "invalid manifests:\n" + "\n".join(f"{k}:\n  " + "\n  ".join(v) for k, v in bad.items())


RESTRICTED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret",
}  # fmt: skip


def restricted_problems(pod_spec: Mapping[str, Any]) -> list[str]:
    """How a pod spec breaks the Pod Security Standard *restricted* (baseline included), per the checks the
    admission controller runs: host namespaces and ports, privileged containers, volume types, privilege escalation,
    non-root, seccomp, capabilities."""
    found = []
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod_spec.get(key):
            found.append(f"{key} is set")
    for volume in pod_spec.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            found.append(f"volume {volume.get('name')}: {sorted(kinds - RESTRICTED_VOLUMES)} not allowed")
    pod_context = pod_spec.get("securityContext") or {}
    if pod_context.get("runAsUser") == 0:
        found.append("pod runs as user 0")
    containers = [
        *pod_spec.get("initContainers", []),
        *pod_spec.get("containers", []),
        *pod_spec.get("ephemeralContainers", []),
    ]
    for box in containers:
        name, context = box.get("name"), box.get("securityContext") or {}
        if context.get("privileged"):
            found.append(f"{name}: privileged")
        if context.get("allowPrivilegeEscalation") is not False:
            found.append(f"{name}: allowPrivilegeEscalation is not false")
        if not context.get("runAsNonRoot", pod_context.get("runAsNonRoot")):
            found.append(f"{name}: runAsNonRoot is not true")
        if context.get("runAsUser") == 0:
            found.append(f"{name}: runs as user 0")
        seccomp = (context.get("seccompProfile") or pod_context.get("seccompProfile") or {}).get("type")
        if seccomp not in {"RuntimeDefault", "Localhost"}:
            found.append(f"{name}: seccompProfile is {seccomp!r}, not RuntimeDefault")
        capabilities = context.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            found.append(f"{name}: capabilities do not drop ALL")
        if set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
            found.append(f"{name}: adds capabilities {capabilities['add']}")
        if any(port.get("hostPort") for port in box.get("ports") or []):
            found.append(f"{name}: uses a hostPort")
    return found


def pod_spec_of(manifest: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The pod spec inside a Pod, a workload's template, or a CronJob's job template; None for other kinds."""
    kind, spec = manifest.get("kind"), manifest.get("spec") or {}
    if kind == "Pod":
        return spec
    if kind in {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}:
        return spec.get("template", {}).get("spec")
    if kind == "CronJob":
        return spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec")
    return None
