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
