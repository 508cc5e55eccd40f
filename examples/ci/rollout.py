"""Roll out what a folder of Cove specs says, check it, and roll back if it does not work.

    COVE_API_URL=https://cove.example.com COVE_TOKEN=cove-… python rollout.py specs/ [--prompt Hello] [--expect TEXT]

1. Reads every *.yaml / *.yml document in the folder (or one file) and notes what each object is now.
2. Applies them (`client.specs.apply`): created, updated or unchanged, with each change shown.
3. Waits until every deployment in them is Ready.
4. Smoke test: one chat per deployment through the gateway, with a key limited to that deployment that expires in
   an hour (revoked at the end); the answer must not be empty (and must contain --expect, when given).
5. If 3 or 4 fails: puts back what was there (objects that existed are applied as they were; objects this rollout
   created are deleted) and exits 1. Exit 0 means the new specs serve.

The token needs the scopes the documents touch, e.g. `models:write deployments:write keys:write`.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import yaml

import cove


def read(path: Path) -> list[dict[str, Any]]:
    files = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml")) if path.is_dir() else [path]
    return [doc for f in files for doc in yaml.safe_load_all(f.read_text()) if doc]


def name_of(doc: dict[str, Any]) -> tuple[str, str]:
    return str(doc.get("kind")), str((doc.get("metadata") or {}).get("name"))


def before(client: cove.Client, docs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any] | None]:
    """Each object as it is now, as a document (None: it does not exist yet)."""
    found: dict[tuple[str, str], dict[str, Any] | None] = {}
    for doc in docs:
        kind, name = name_of(doc)
        try:
            found[kind, name] = client.specs.get(kind, name)
        except cove.NotFound:
            found[kind, name] = None
    return found


def smoke(client: cove.Client, deployment: str, prompt: str, expect: str | None) -> str:
    """One chat with ``deployment`` through the gateway, with a key made for it alone; the answer."""
    stamp = datetime.now(UTC)
    key = client.keys.create(
        f"rollout-{deployment}-{stamp:%Y%m%d%H%M%S}", deployments=[deployment], expires_at=stamp + timedelta(hours=1)
    )
    try:
        response = httpx.post(
            client.gateway_url + "/chat/completions",
            headers={"Authorization": f"Bearer {key.key}"},
            json={
                "model": deployment,
                "messages": [{"role": "user", "content": prompt}],
                "max_tokens": 32,
                "temperature": 0,
            },
            timeout=120,
        )
        response.raise_for_status()
        answer = str(response.json()["choices"][0]["message"]["content"] or "")
    finally:
        client.keys.revoke(key.name)
    if not answer.strip():
        raise RuntimeError(f"{deployment} answered nothing to {prompt!r}")
    if expect is not None and expect not in answer:
        raise RuntimeError(f"{deployment} answered {answer!r}, which lacks {expect!r}")
    return answer


def roll_back(
    client: cove.Client, docs: list[dict[str, Any]], was: dict[tuple[str, str], dict[str, Any] | None]
) -> None:
    created = [d for d in docs if was[name_of(d)] is None]
    restored = [d for d in (was[name_of(doc)] for doc in docs) if d is not None]
    if created:
        for result in client.specs.delete(created):
            print(f"rollback: {result.kind} {result.name} {result.action}")
    if restored:
        for result in client.specs.apply(restored):
            print(f"rollback: {result.kind} {result.name} {result.action}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("specs", type=Path, help="a spec file, or a folder of them")
    parser.add_argument("--timeout", type=float, default=600, help="seconds each deployment may take to be Ready")
    parser.add_argument("--prompt", default="Hello")
    parser.add_argument("--expect", default=None, help="text the smoke test's answer must contain")
    args = parser.parse_args()

    client = cove.Client()
    docs = read(args.specs)
    was = before(client, docs)
    try:
        results = client.specs.apply(docs)
    except cove.CoveError as exc:  # invalid documents, a fixed field changed, …: nothing was applied
        print(f"error: {exc.message}\n  next: {exc.hint}", file=sys.stderr)
        return 1
    for result in results:
        changes = ", ".join(f"{c.path}: {c.before!r} → {c.after!r}" for c in result.changes)
        print(f"{result.kind} {result.name}: {result.action}{' (' + changes + ')' if changes else ''}")

    deployments = [name for kind, name in map(name_of, docs) if kind == "Deployment"]
    try:
        for name in deployments:
            ready = client.deployments.wait_ready(
                name, timeout=args.timeout, on_change=lambda d: print(f"{d.name}: {d.status} {d.message}".rstrip())
            )
            print(f"{name}: Ready, {ready.ready_replicas}/{ready.replicas} replicas")
            print(f"{name} answered: {smoke(client, name, args.prompt, args.expect)!r}")
    except (cove.CoveError, RuntimeError, httpx.HTTPError) as exc:
        print(f"rollout failed: {exc}", file=sys.stderr)
        roll_back(client, docs, was)
        return 1
    print("rollout done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
