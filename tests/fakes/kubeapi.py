"""A Kubernetes API for tests: kmock's emulator with the gaps real clients run into filled in, and a kubelet the
test drives.

kmock (``KubernetesEmulator``) stores objects and serves create/get/list/watch/patch/delete over HTTP. What a real
API server does besides, that KubeSpawner and Cove's backend rely on, is added here and nothing more:

- ``watch=True`` (kubernetes_asyncio's spelling) is a watch, as ``watch=true`` is;
- label and field selectors filter lists and watches (equality, inequality, existence);
- a created object gets its namespace, uid, resourceVersion and creationTimestamp, and a pod ``phase: Pending``;
- every change gives the object a new resourceVersion, and a patch that names a resourceVersion other than the
  stored one is refused with 409 Conflict (optimistic concurrency: two writers that read the same version cannot
  both win, which leader election through a Lease relies on).

Nothing schedules or runs pods: ``Kubelet`` moves them, as the test decides (running and ready, Pending for lack of
GPUs, OOMKilled), through the API's ``/status`` subresource so every watcher sees it.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import threading
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp
import attrs
import kmock
from aiohttp import web
from kmock._internal import rendering  # the request type its handlers receive
from kmock._internal.k8s import KubernetesError

OFFICIAL_CLIENT = "OpenAPI-Generator/"  # how the ``kubernetes`` package's requests introduce themselves


@attrs.frozen
class Call:
    """One HTTP request the API served."""

    method: str
    path: str
    query: dict[str, str]
    agent: str


Selector = list[tuple[str, str, str | None]]  # (key, operator, value): "=", "!=", "exists", "!exists"


def parse_selector(text: str) -> Selector:
    """``app=x,tier!=web,gpu,!spot`` as (key, op, value) terms (set-based ``in (…)`` is not supported)."""
    terms: Selector = []
    for raw in filter(None, (t.strip() for t in text.split(","))):
        if "!=" in raw:
            key, value = raw.split("!=", 1)
            terms.append((key, "!=", value))
        elif "=" in raw:
            key, value = raw.replace("==", "=").split("=", 1)
            terms.append((key, "=", value))
        elif raw.startswith("!"):
            terms.append((raw[1:], "!exists", None))
        else:
            terms.append((raw, "exists", None))
    return terms


def _field(obj: Mapping[str, Any], path: str) -> str | None:
    value: Any = obj
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return None if value is None else str(value)


def matches(obj: Mapping[str, Any], labels: Selector, fields: Selector) -> bool:
    have = obj.get("metadata", {}).get("labels") or {}
    for key, op, value in labels:
        if (op == "=" and have.get(key) != value) or (op == "!=" and have.get(key) == value):
            return False
        if (op == "exists" and key not in have) or (op == "!exists" and key in have):
            return False
    for path, op, value in fields:
        got = _field(obj, path)
        if (op == "=" and got != value) or (op == "!=" and got == value):
            return False
    return True


@attrs.frozen
class StaleResourceVersion(KubernetesError):  # type: ignore[misc]
    """What the API answers a write made against a version of the object that is no longer the stored one."""

    status: int = 409
    reason: str = "Conflict"
    message: str = "the object has been modified; please apply your changes to the latest version and try again"


@attrs.define(kw_only=True)
class KubeAPI(kmock.KubernetesEmulator):  # type: ignore[misc]
    """kmock's emulator, completed as the module docstring says. Use ``async with KubeAPI.serve() as api``."""

    _versions: Iterator[int] = attrs.field(factory=lambda: itertools.count(1), init=False)
    _sent: list[tuple[str, str, dict[str, Any]]] = attrs.field(factory=list, init=False)  # method, plural, body
    _calls: list[Call] = attrs.field(factory=list, init=False)
    _updating: asyncio.Lock = attrs.field(factory=asyncio.Lock, init=False)  # check-then-write of one patch at a time

    @classmethod
    def serve(cls) -> _Served:
        return _Served(cls())

    async def __call__(self, raw_request: web.BaseRequest) -> web.StreamResponse:
        agent = raw_request.headers.get("User-Agent", "")
        self._calls.append(Call(raw_request.method, raw_request.path, dict(raw_request.query), agent))
        if raw_request.query.get("watch", "").lower() in {"true", "1"}:
            raw_request = raw_request.clone(rel_url=raw_request.rel_url.update_query(watch="true"))
        return await super().__call__(raw_request)

    async def _handle(self, request: rendering.Request) -> web.StreamResponse:
        if request.resource is not None and isinstance(request.data, dict):
            self._sent.append((request.method.value, request.resource.plural, copy.deepcopy(request.data)))
            if request.action == kmock.action.CREATE:
                self._fill_in(request.data, request)
            elif request.action == kmock.action.UPDATE and request.name is not None:
                async with self._updating:
                    self._check_version(request)
                    return await super()._handle(request)
        return await super()._handle(request)

    def _check_version(self, request: rendering.Request) -> None:
        """Refuse a patch made against another version than the stored one; give the patched object a new one."""
        key = (request.resource, request.namespace, request.name)
        if key not in self.objects or self.objects[key].deleted:
            return  # kmock answers 404
        stored = self.objects[key]
        meta = request.data.setdefault("metadata", {})
        if meta.get("resourceVersion") not in (None, stored.get("metadata", {}).get("resourceVersion")):
            raise StaleResourceVersion()
        meta["resourceVersion"] = str(next(self._versions))

    def _fill_in(self, obj: dict[str, Any], request: rendering.Request) -> None:
        meta = obj.setdefault("metadata", {})
        if request.namespace:
            meta.setdefault("namespace", request.namespace)
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", _now())
        meta["resourceVersion"] = str(next(self._versions))
        if request.resource is not None and request.resource.plural == "pods":
            obj.setdefault("status", {"phase": "Pending"})

    @staticmethod
    def _selected(request: rendering.Request) -> tuple[Selector, Selector]:
        params = request.params or {}
        return parse_selector(params.get("labelSelector", "")), parse_selector(params.get("fieldSelector", ""))

    async def _serve_list(self, request: rendering.Request) -> Any:
        listing = await super()._serve_list(request)
        labels, fields = self._selected(request)
        listing["items"] = [item for item in listing["items"] if matches(item, labels, fields)]
        return listing

    async def _serve_watch(self, request: rendering.Request) -> AsyncIterator[Any]:
        labels, fields = self._selected(request)
        async for event in super()._serve_watch(request):
            if not isinstance(event, dict) or matches(event.get("object", {}), labels, fields):
                yield event

    # ------------------------------------------------------------------------------------------ for assertions

    def stored(self, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """The live objects of a resource (as the API would list them), oldest first."""
        found = []
        for (resource, ns, _name), obj in self.objects.items():
            if resource.plural == plural and not obj.deleted and namespace in (None, ns):
                found.append(dict(obj.raw))
        return sorted(found, key=lambda o: int(o["metadata"].get("resourceVersion", 0)))

    def calls(self, *, by_official_client: bool = True) -> list[Call]:
        """Every request served, in order; by default only those of the official ``kubernetes`` client (Cove's
        backend and leader election), not the test's own (the kubelet and controllers it plays, over aiohttp)."""
        return [c for c in self._calls if not by_official_client or c.agent.startswith(OFFICIAL_CLIENT)]

    def sent(self, method: str, plural: str) -> list[dict[str, Any]]:
        """The bodies clients sent with this HTTP method to this resource, in order, as sent."""
        return [body for m, p, body in self._sent if m == method and p == plural]


class _Served:
    """The emulator listening on 127.0.0.1 with the bundled built-in resources, for ``async with``."""

    def __init__(self, api: KubeAPI) -> None:
        self.api = api
        self.api.resources.load_bundled()
        self._server = kmock.Server(api)

    async def __aenter__(self) -> KubeAPI:
        await self.api.__aenter__()
        await self._server.__aenter__()
        return self.api

    async def __aexit__(self, *exc: Any) -> None:
        await self._server.__aexit__(*exc)
        await self.api.__aexit__(*exc)


class Kubelet:
    """Moves pods through their lives as a kubelet would, through the API (so watchers see each change)."""

    def __init__(self, api: KubeAPI) -> None:
        self.api = api
        self._ips = (f"10.42.0.{n}" for n in itertools.count(10))

    async def _patch_status(self, pod: Mapping[str, Any], status: dict[str, Any]) -> None:
        meta = pod["metadata"]
        path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status"
        async with aiohttp.ClientSession(self.api.url) as http, http.patch(path, json={"status": status}) as reply:
            reply.raise_for_status()

    async def run(self, pod: Mapping[str, Any]) -> str:
        """Running and ready, with an IP; returns the IP."""
        ip = next(self._ips)
        containers = [
            {
                "name": c["name"],
                "image": c["image"],
                "imageID": f"{c['image']}@sha256:{'0' * 64}",
                "ready": True,
                "started": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": _now()}},
            }
            for c in pod["spec"]["containers"]
        ]
        ready = [{"type": "Ready", "status": "True"}, {"type": "PodScheduled", "status": "True"}]
        await self._patch_status(
            pod, {"phase": "Running", "podIP": ip, "containerStatuses": containers, "conditions": ready}
        )
        return ip

    async def unschedulable(self, pod: Mapping[str, Any], reason: str) -> None:
        """Pending: the scheduler found no node (``reason`` as it would say, e.g. "Insufficient nvidia.com/gpu")."""
        condition = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": reason}
        await self._patch_status(pod, {"phase": "Pending", "conditions": [condition]})

    async def oom_killed(self, pod: Mapping[str, Any]) -> None:
        """Started, killed for using more memory than its limit, three times, and now backing off."""
        killed = {"terminated": {"reason": "OOMKilled", "exitCode": 137, "startedAt": _now(), "finishedAt": _now()}}
        containers = [
            {
                "name": c["name"], "image": c["image"], "imageID": "", "ready": False, "restartCount": 3,
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off restarting"}},
                "lastState": killed,
            }
            for c in pod["spec"]["containers"]
        ]  # fmt: skip
        await self._patch_status(pod, {"phase": "Running", "podIP": next(self._ips), "containerStatuses": containers})

    async def each_new_pod(self, handle: Any, *, namespace: str | None = None) -> None:
        """Call ``await handle(pod)`` once for every pod that appears (until cancelled)."""
        seen: set[str] = set()
        while True:
            for pod in self.api.stored("pods", namespace):
                uid = pod["metadata"]["uid"]
                if uid not in seen and pod.get("status", {}).get("phase") == "Pending":
                    seen.add(uid)
                    await handle(pod)
            await asyncio.sleep(0.01)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Cluster:
    """A KubeAPI served from a thread of its own, for synchronous clients (the ``kubernetes`` package), with the
    test playing the controllers: ``settle()`` gives each Deployment its pods (and removes the pods of deleted
    ones), then the kubelet moves each new pod as ``pods`` says."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._served: _Served | None = None
        self.api: KubeAPI | None = None
        self.kubelet: Kubelet | None = None

    def __enter__(self) -> Cluster:
        self._thread.start()
        self._served = KubeAPI.serve()
        self.api = self.run(self._served.__aenter__())
        self.kubelet = Kubelet(self.api)
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self._served is not None
        self.run(self._served.__aexit__(None, None, None))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    @property
    def url(self) -> str:
        assert self.api is not None
        return str(self.api.url).rstrip("/")

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    def settle(self, pods: str = "run", reason: str = "") -> None:
        """Play the Deployment controller, then the kubelet: ``run`` (ready), ``unschedulable`` (with ``reason``),
        ``oom`` (the container killed for memory, restarting)."""
        self.run(self._settle(pods, reason))

    async def _settle(self, how: str, reason: str) -> None:
        assert self.api is not None
        assert self.kubelet is not None
        async with aiohttp.ClientSession(self.api.url) as http:
            wanted: dict[tuple[str, str], dict[str, Any]] = {}
            for deployment in self.api.stored("deployments"):
                meta, spec = deployment["metadata"], deployment["spec"]
                for i in range(int(spec.get("replicas", 1))):
                    wanted[(meta["namespace"], f"{meta['name']}-{i}")] = spec["template"]
            for pod in self.api.stored("pods"):
                key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
                if key not in wanted:
                    async with http.delete(f"/api/v1/namespaces/{key[0]}/pods/{key[1]}") as reply:
                        reply.raise_for_status()
            have = {(p["metadata"]["namespace"], p["metadata"]["name"]) for p in self.api.stored("pods")}
            for (namespace, name), template in wanted.items():
                if (namespace, name) in have:
                    continue
                body = {"apiVersion": "v1", "kind": "Pod", "metadata": {**template["metadata"], "name": name},
                        "spec": template["spec"]}  # fmt: skip
                async with http.post(f"/api/v1/namespaces/{namespace}/pods", json=body) as reply:
                    reply.raise_for_status()
                    created = await reply.json()
                if how == "run":
                    await self.kubelet.run(created)
                elif how == "unschedulable":
                    await self.kubelet.unschedulable(created, reason)
                elif how == "oom":
                    await self.kubelet.oom_killed(created)

    def create(self, path: str, body: Mapping[str, Any]) -> None:
        """An object made by someone else (the Job controller making a Job's pod, say)."""
        self.run(self._post(path, body))

    def delete(self, path: str) -> None:
        """An object removed by someone else (a person with kubectl, say)."""
        self.run(self._delete(path))

    async def _delete(self, path: str) -> None:
        assert self.api is not None
        async with aiohttp.ClientSession(self.api.url) as http, http.delete(path) as reply:
            reply.raise_for_status()

    def patch(self, path: str, body: Mapping[str, Any]) -> None:
        """A merge patch from someone else (a HorizontalPodAutoscaler scaling a Deployment, say)."""
        self.run(self._patch(path, body))

    async def _patch(self, path: str, body: Mapping[str, Any]) -> None:
        assert self.api is not None
        async with aiohttp.ClientSession(self.api.url) as http, http.patch(path, json=body) as reply:
            reply.raise_for_status()

    def finish_jobs(self, outcome: str = "succeeded", *, exit_code: int = 1, failing: str = "") -> None:
        """Play the Job controller and the kubelet for every unfinished Job: a pod that ran to ``outcome``
        (``succeeded``, or ``failed`` with ``exit_code`` in the container named ``failing``: by default the first,
        init containers first; those before it exit 0, those after it never start), and the Job's status to match."""
        self.run(self._finish_jobs(outcome, exit_code, failing))

    async def _finish_jobs(self, outcome: str, exit_code: int, failing: str) -> None:
        assert self.api is not None
        for job in self.api.stored("jobs"):
            meta, status = job["metadata"], job.get("status") or {}
            if status.get("succeeded") or status.get("failed"):
                continue
            namespace, name = meta["namespace"], meta["name"]
            template = job["spec"]["template"]
            pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {**template["metadata"], "name": f"{name}-x1"},
                   "spec": template["spec"]}  # fmt: skip
            await self._post(f"/api/v1/namespaces/{namespace}/pods", pod)
            inits, mains = template["spec"].get("initContainers") or [], template["spec"]["containers"]
            failed = "" if outcome == "succeeded" else failing or (inits + mains)[0]["name"]
            states: dict[str, dict[str, Any]] = {}
            reached = False
            for c in inits + mains:
                if reached:
                    states[c["name"]] = {"waiting": {"reason": "PodInitializing"}}
                elif c["name"] == failed:
                    states[c["name"]] = {"terminated": {"exitCode": exit_code, "reason": "Error"}}
                    reached = True
                else:
                    states[c["name"]] = {"terminated": {"exitCode": 0, "reason": "Completed"}}
            boxes = {c["name"]: {"name": c["name"], "image": c["image"], "imageID": "", "ready": False,
                                 "restartCount": 0, "state": states[c["name"]]} for c in inits + mains}  # fmt: skip
            phase = "Failed" if failed else "Succeeded"
            pod_status: dict[str, Any] = {"phase": phase, "containerStatuses": [boxes[c["name"]] for c in mains]}
            if inits:
                pod_status["initContainerStatuses"] = [boxes[c["name"]] for c in inits]
            await self._patch(f"/api/v1/namespaces/{namespace}/pods/{name}-x1/status", {"status": pod_status})
            kind, text = ("Failed", "Job has reached the specified backoff limit") if failed else ("Complete", "")
            condition = {"type": kind, "status": "True", "message": text}
            counts = {"failed": 1} if failed else {"succeeded": 1}
            await self._patch(
                f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}/status",
                {"status": {**counts, "conditions": [condition]}},
            )

    async def _post(self, path: str, body: Mapping[str, Any]) -> None:
        assert self.api is not None
        async with aiohttp.ClientSession(self.api.url) as http, http.post(path, json=body) as reply:
            reply.raise_for_status()
