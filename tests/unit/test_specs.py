"""The pure side of specs (studio.specs): parsing with every invalid field named by its path, the field-level diff,
which fields are fixed, recommendations as resources and version constraints, and the published JSON Schema."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from studio import specs
from studio.errors import InvalidSpec
from studio.specs import Change, Kind
from studio.values import Resources

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "docs" / "cove-spec.schema.json"


def deployment(**spec: Any) -> specs.AnyDocument:
    return specs.document(Kind.DEPLOYMENT, "chat", {"model": "demo-chat", **spec})


def test_every_invalid_field_is_named_with_file_document_and_path() -> None:
    text = textwrap.dedent(
        """\
        apiVersion: cove/v1
        kind: Model
        metadata: {name: demo-chat}
        spec: {source: hf:cove/demo-chat}
        ---
        apiVersion: cove/v1
        kind: Deployment
        metadata: {name: demo-chat, colour: red}
        spec: {model: demo-chat, replicas: 100, autoscale: {min_replicas: 3, max_replicas: 2}}
        ---
        apiVersion: cove/v1
        kind: Gadget
        metadata: {name: g}
        ---
        kind: Key
        metadata: {name: k, group: team}
        """
    )
    with pytest.raises(InvalidSpec) as caught:
        specs.parse(text, where="examples/specs/chat.yaml")
    where = "examples/specs/chat.yaml: document 2 (Deployment demo-chat)"
    assert caught.value.fields == [
        {"document": where, "path": "metadata.colour", "message": "Extra inputs are not permitted"},
        {"document": where, "path": "spec.replicas", "message": "Input should be less than or equal to 64"},
        {"document": where, "path": "spec.autoscale", "message": "min_replicas (3) exceeds max_replicas (2)"},
        {
            "document": "examples/specs/chat.yaml: document 3 (Gadget g)",
            "path": "kind",
            "message": "'Gadget' is not a kind: use one of Image, Model, Key, Deployment, Pool",
        },
        {"document": "examples/specs/chat.yaml: document 4 (Key k)", "path": "apiVersion", "message": "Field required"},
    ]
    assert f"{where}: spec.replicas: Input should be less than or equal to 64" in caught.value.message
    assert caught.value.message.startswith("5 invalid fields; nothing was applied")


def test_a_key_has_no_group_and_an_object_is_described_once() -> None:
    key = {"apiVersion": "cove/v1", "kind": "Key", "metadata": {"name": "k", "group": "team"}}
    with pytest.raises(InvalidSpec) as caught:
        specs.parse_documents([key], where="request")
    assert [(f["path"], f["message"]) for f in caught.value.fields] == [
        ("metadata.group", "a key is its owner's alone and has no group")
    ]
    twice = {"apiVersion": "cove/v1", "kind": "Model", "metadata": {"name": "m"}}
    with pytest.raises(InvalidSpec, match="Model m is described twice"):
        specs.parse_documents([twice, twice], where="request")


def test_a_pool_document_takes_helm_values_words_and_names_bad_fields_by_path() -> None:
    text = textwrap.dedent(
        """\
        apiVersion: cove/v1
        kind: Pool
        metadata: {name: gpu}
        spec:
          purpose: serve
          sharing: hami
          gpuCount: 2
          gpu_memory_mib: 81920
          quotaGpus: 1.5
          groups: [research]
          nodeSelector: {cove.dev/pool: gpu}
          tolerations: [{key: nvidia.com/gpu, operator: Exists}]
        """
    )
    [pool] = specs.parse(text)
    assert isinstance(pool, specs.PoolDocument)
    assert (pool.spec.gpu_count, pool.spec.gpu_memory_mib, pool.spec.quota_gpus) == (2, 81920, 1.5)
    assert specs.dump(pool)["spec"]["nodeSelector"] == {"cove.dev/pool": "gpu"}
    assert specs.dump(pool)["spec"]["gpuMemoryMib"] == 81920  # written back in the Helm values' words
    broken = {
        "apiVersion": "cove/v1",
        "kind": "Pool",
        "metadata": {"name": "gpu", "group": "team"},
        "spec": {"gpuCount": -1, "sharing": "halves", "quotaGPUs": 1},
    }
    with pytest.raises(InvalidSpec) as caught:
        specs.parse_documents([broken], where="pools.yaml")
    assert [f["path"] for f in caught.value.fields] == ["spec.sharing", "spec.gpuCount", "spec.quotaGPUs"]
    assert "Extra inputs are not permitted" in caught.value.fields[2]["message"]
    grouped = broken | {"spec": {}}
    with pytest.raises(InvalidSpec) as caught:
        specs.parse_documents([grouped], where="pools.yaml")
    assert [(f["path"], f["message"]) for f in caught.value.fields] == [
        ("metadata.group", "a pool has no group; spec.groups says who may use it")
    ]


def test_yaml_that_is_not_yaml_says_where() -> None:
    with pytest.raises(InvalidSpec, match=r"a\.yaml: not YAML at line 2, column 1"):
        specs.parse("kind: Model\n- x\n", where="a.yaml")


def test_documents_are_applied_in_dependency_order_and_deleted_in_reverse() -> None:
    docs = [
        deployment(),
        specs.document(Kind.KEY, "k", {}),
        specs.document(Kind.MODEL, "demo-chat", {}),
        specs.document(Kind.IMAGE, "srv", {"version": "1"}),
    ]
    assert [d.kind for d in specs.ordered(docs)] == [Kind.IMAGE, Kind.MODEL, Kind.KEY, Kind.DEPLOYMENT]
    assert [d.kind for d in specs.ordered(docs, reverse=True)] == [Kind.DEPLOYMENT, Kind.KEY, Kind.MODEL, Kind.IMAGE]
    pool = specs.document(Kind.POOL, "gpu", {})
    assert [d.kind for d in specs.ordered([deployment(), pool])] == [Kind.POOL, Kind.DEPLOYMENT]  # a deployment's pool


def test_diff_compares_only_what_the_desired_document_states() -> None:
    now = deployment(model="demo-chat:1", image="transformers:0.1.0", pool="local", replicas=1, runtime_args=[])
    assert specs.diff(now, deployment(replicas=1)) == []  # a model without a version matches any
    assert specs.diff(now, deployment(replicas=3)) == [Change(path="spec.replicas", before=1, after=3)]
    assert specs.diff(now, deployment(model="demo-chat:2")) == [
        Change(path="spec.model", before="demo-chat:1", after="demo-chat:2")
    ]


def test_diff_of_a_mapping_is_leaf_by_leaf_and_a_count_turns_autoscaling_off() -> None:
    now = deployment(autoscale={"min_replicas": 1, "max_replicas": 3}, resources={"cpu": 1})
    changes = specs.diff(now, deployment(resources={"cpu": 2, "memory_mib": 2048}, replicas=2))
    assert changes == [
        Change(path="spec.replicas", before=None, after=2),
        Change(path="spec.resources.cpu", before=1.0, after=2.0),
        Change(
            path="spec.autoscale",
            before={"min_replicas": 1, "max_replicas": 3, "target_inflight": 4.0, "idle_s": 300.0},
            after=None,
        ),
    ]
    assert [c.path for c in specs.refused(Kind.DEPLOYMENT, changes)] == ["spec.resources.cpu"]


def test_diff_of_something_new_lists_every_stated_field() -> None:
    wanted = deployment(replicas=2)
    assert specs.diff(None, wanted) == [
        Change(path="spec.model", after="demo-chat"),
        Change(path="spec.replicas", after=2),
    ]


def test_a_hub_source_without_a_revision_matches_any_revision_and_folders_by_path() -> None:
    now = specs.document(Kind.MODEL, "m", {"source": "hf:cove/demo-chat@abc123", "description": "x"})
    assert specs.diff(now, specs.document(Kind.MODEL, "m", {"source": "hf:cove/demo-chat"})) == []
    moved = specs.diff(now, specs.document(Kind.MODEL, "m", {"source": "hf:cove/demo-chat@def456"}))
    assert specs.refused(Kind.MODEL, moved) == moved
    folder = specs.document(Kind.MODEL, "m", {"source": "/models/m"})
    assert specs.diff(folder, specs.document(Kind.MODEL, "m", {"source": "/models/./m/"})) == []
    described = specs.diff(now, specs.document(Kind.MODEL, "m", {"description": "y"}))
    assert described == [Change(path="spec.description", before="x", after="y")]
    assert specs.refused(Kind.MODEL, described) == []


@pytest.mark.parametrize(
    ("kind", "path", "fixed"),
    [
        (Kind.DEPLOYMENT, "spec.replicas", False),
        (Kind.DEPLOYMENT, "spec.autoscale.max_replicas", False),
        (Kind.DEPLOYMENT, "spec.image", True),
        (Kind.DEPLOYMENT, "spec.pool", True),
        (Kind.DEPLOYMENT, "spec.runtime_args", True),
        (Kind.DEPLOYMENT, "metadata.group", True),
        (Kind.MODEL, "spec.deployments", False),
        (Kind.MODEL, "spec.source", True),
        (Kind.IMAGE, "spec.description", True),
        (Kind.KEY, "spec.scopes", True),
        (Kind.POOL, "spec.groups", False),
        (Kind.POOL, "spec.quotaGpus", False),
        (Kind.POOL, "spec.nodeSelector.zone", False),
        (Kind.POOL, "spec.cluster", True),
    ],
)
def test_which_fields_are_fixed_once_created(kind: Kind, path: str, fixed: bool) -> None:
    assert specs.immutable(kind, path) is fixed


def test_a_recommendation_in_the_model_hubs_words() -> None:
    [model] = specs.parse(
        textwrap.dedent(
            """\
            apiVersion: cove/v1
            kind: Model
            metadata: {name: qwen}
            spec:
              source: hf:Qwen/Qwen2.5-7B-Instruct
              deployments:
                - runtime: vllm
                  versionRequired: '>=0.7.1'
                  resourceRequirements: {gpuType: H100, gpuCount: 2, perGPUMemoryGB: 80, cpu: 8, memory: 64Gi}
                  customRuntimeArgs: [--max-model-len, '8192']
                - runtime: sglang
                  resourceRequirements: {perGPUMemoryGB: 20, memory: 32}
            """
        )
    )
    assert isinstance(model, specs.ModelDocument)
    vllm, sglang = model.spec.deployments or []
    assert vllm.resource_requirements.resources() == Resources(cpu=8, memory_mib=65536, gpus=2)
    assert sglang.resource_requirements.resources() == Resources(gpu_memory_mib=20480, memory_mib=32768)
    assert vllm.custom_runtime_args == ["--max-model-len", "8192"]
    assert specs.dump(model)["spec"]["deployments"][0]["versionRequired"] == ">=0.7.1"  # written as it was read


def test_version_constraints_on_image_tags() -> None:
    assert specs.satisfies("v0.33.0", ">=0.7.1")
    assert not specs.satisfies("v0.6.9", ">=0.7.1")
    assert not specs.satisfies("26.07-py3", ">=1")  # not a version: meets only no constraint
    assert specs.satisfies("26.07-py3", None)
    assert specs.newest(["v0.9.0", "v0.10.1", "nightly"]) == "v0.10.1"
    with pytest.raises(ValueError, match="not a version constraint"):
        specs.version_constraint("at least 1")


@pytest.mark.parametrize(
    ("given", "mib"), [("512Mi", 512), ("16Gi", 16384), ("16GB", 16384), (2, 2048), ("1T", 1048576)]
)
def test_memory_in_the_units_people_write(given: float | str, mib: int) -> None:
    assert specs.memory_mib(given) == mib


def test_the_published_schema_is_current() -> None:
    published = json.loads(SCHEMA.read_text())
    assert published == json.loads(json.dumps(specs.schema())), (
        "docs/cove-spec.schema.json is stale: python -m studio.specs > docs/cove-spec.schema.json"
    )


@pytest.mark.parametrize("path", sorted((ROOT / "examples" / "specs").glob("*.y*ml")), ids=lambda p: p.name)
def test_the_examples_validate_against_the_schema_and_parse(path: Path) -> None:
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))
    for doc in yaml.safe_load_all(path.read_text()):
        assert list(validator.iter_errors(doc)) == []
    assert specs.parse(path.read_text(), where=str(path))


def test_the_schema_refuses_what_the_parser_refuses() -> None:
    validator = jsonschema.Draft202012Validator(specs.schema())
    unknown = {"apiVersion": "cove/v1", "kind": "Deployment", "metadata": {"name": "x"}, "spec": {"model": "m", "x": 1}}
    assert not validator.is_valid(unknown)
    assert validator.is_valid({**unknown, "spec": {"model": "m"}})
