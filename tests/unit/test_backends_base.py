"""WorkloadSpec.fingerprint decides whether running replicas are replaced: anything but the replica count."""

from __future__ import annotations

import dataclasses

import pytest

from studio.backends.base import ReplicaStatus, WorkloadSpec, WorkloadStatus
from studio.values import Resources


def spec(**changes: object) -> WorkloadSpec:
    base = WorkloadSpec(
        name="chat",
        runtime="transformers",
        model="Qwen/Qwen2.5-0.5B-Instruct",
        model_revision="abc123",
        image="ghcr.io/cove/transformers:5.23.0",
        args=("--max-new-tokens", "64"),
        resources=Resources(cpu=2, memory_mib=4096),
        replicas=1,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_equal_specs_built_apart_have_the_same_fingerprint() -> None:
    first, second = spec(), spec(resources=Resources(cpu=2.0, memory_mib=4096))

    assert first.fingerprint == second.fingerprint
    assert len(first.fingerprint) == 16
    assert int(first.fingerprint, 16) >= 0  # hex


def test_the_replica_count_does_not_change_the_fingerprint() -> None:
    assert spec(replicas=5).fingerprint == spec().fingerprint
    assert spec(replicas=0).fingerprint == spec().fingerprint


@pytest.mark.parametrize(
    "changes",
    [
        {"args": ("--max-new-tokens", "128")},
        {"args": ()},
        {"resources": Resources(cpu=4, memory_mib=4096)},
        {"resources": Resources(cpu=2, memory_mib=8192)},
        {"model": "Qwen/Qwen2.5-1.5B-Instruct"},
        {"model_revision": "def456"},
        {"image": "ghcr.io/cove/transformers:5.24.0"},
        {"local_command": ("srv", "{port}")},
        {"pool": "gpu"},
        {"node_selector": (("cove.dev/pool", "gpu"),)},
        {"embeds": True},
    ],
    ids=lambda c: next(iter(c)),
)
def test_any_other_change_changes_the_fingerprint(changes: dict[str, object]) -> None:
    assert spec(**changes).fingerprint != spec().fingerprint


def test_ready_lists_only_ready_replicas() -> None:
    ready = ReplicaStatus(1, "ready", "http://127.0.0.1:41002")
    work = WorkloadStatus("chat", (ReplicaStatus(0, "starting"), ready, ReplicaStatus(2, "backoff")))

    assert work.ready == (ready,)
