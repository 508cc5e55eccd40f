"""What users may ask for: the validators on resources, autoscale bounds, images and deployments, and the
messages they show."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from studio.models import DeploymentCreate, ImageCreate
from studio.values import Autoscale, Resources


def messages(cls: type[BaseModel], /, **fields: Any) -> list[tuple[tuple[int | str, ...], str]]:
    """The (location, message) of each error a user sees for ``fields``."""
    with pytest.raises(ValidationError) as raised:
        cls(**fields)
    return [(e["loc"], e["msg"]) for e in raised.value.errors()]


# ------------------------------------------------------------------------------------------------ Resources


def test_default_resources_are_one_core_and_two_gib() -> None:
    assert Resources().model_dump() == {"cpu": 1.0, "memory_mib": 2048, "gpus": 0, "gpu_memory_mib": 0, "gpu_cores": 0}


def test_whole_gpus_and_a_memory_slice_together_are_refused() -> None:
    assert messages(Resources, gpus=1, gpu_memory_mib=4096) == [
        ((), "Value error, ask for whole GPUs (gpus) or a GPU memory slice (gpu_memory_mib), not both")
    ]


@pytest.mark.parametrize("gpus", [0, 1])
def test_gpu_cores_need_a_memory_slice(gpus: int) -> None:
    assert messages(Resources, gpus=gpus, gpu_cores=50) == [
        ((), "Value error, gpu_cores applies to a GPU memory slice: give gpu_memory_mib too")
    ]


def test_a_slice_with_a_share_of_cores_is_accepted() -> None:
    assert Resources(gpu_memory_mib=4096, gpu_cores=30).gpu_cores == 30


@pytest.mark.parametrize(
    ("fields", "loc", "msg"),
    [
        ({"cpu": 0}, ("cpu",), "Input should be greater than 0"),
        ({"memory_mib": 32}, ("memory_mib",), "Input should be greater than or equal to 64"),
        ({"gpus": 65}, ("gpus",), "Input should be less than or equal to 64"),
        ({"gpu_memory_mib": 4096, "gpu_cores": 101}, ("gpu_cores",), "Input should be less than or equal to 100"),
    ],
)
def test_resources_out_of_range_are_refused(fields: dict[str, Any], loc: tuple[str], msg: str) -> None:
    assert messages(Resources, **fields) == [(loc, msg)]


# ------------------------------------------------------------------------------------------------ Autoscale


def test_autoscale_min_above_max_is_refused_with_both_numbers() -> None:
    assert messages(Autoscale, min_replicas=3, max_replicas=2) == [
        ((), "Value error, min_replicas (3) exceeds max_replicas (2)")
    ]


def test_autoscale_min_equal_to_max_and_zero_min_are_accepted() -> None:
    assert Autoscale(min_replicas=2, max_replicas=2) == Autoscale(min_replicas=2, max_replicas=2, target_inflight=4.0)
    assert Autoscale(min_replicas=0, max_replicas=4).min_replicas == 0


def test_autoscale_target_must_be_positive() -> None:
    assert messages(Autoscale, target_inflight=0) == [(("target_inflight",), "Input should be greater than 0")]


# ------------------------------------------------------------------------------------------------ ImageCreate

IMAGE = {"name": "my-rt", "version": "1.0", "ref": "registry.example.com/my-rt"}


def test_a_local_command_must_bind_the_assigned_port() -> None:
    assert messages(ImageCreate, **IMAGE, local_command=["my-server", "--model", "{model}"]) == [
        ((), "Value error, local_command must bind the port Cove assigns: use the {port} placeholder")
    ]


def test_an_empty_local_command_is_refused() -> None:
    assert messages(ImageCreate, **IMAGE, local_command=[]) == [
        ((), "Value error, local_command is empty: give the program and its arguments")
    ]


def test_a_health_path_must_be_a_url_path() -> None:
    assert messages(ImageCreate, **IMAGE, health_path="health") == [
        ((), "Value error, health_path is a URL path such as '/health'")
    ]


def test_an_image_with_a_port_placeholder_or_no_command_is_accepted() -> None:
    got = ImageCreate(**IMAGE, local_command=["my-server", "--port={port}"])

    assert (got.runtime, got.local_command, got.health_path) == ("custom", ["my-server", "--port={port}"], "/health")
    assert ImageCreate(**IMAGE).local_command is None


def test_an_image_refuses_latest_and_a_tagged_reference() -> None:
    got = messages(ImageCreate, name="my-rt", version="latest", ref="registry.example.com/my-rt:1.0")

    assert got == [
        (
            ("version",),
            "Value error, 'latest' is not a version: pin a tag such as 'v0.11.0' so deployments are repeatable",
        ),
        (
            ("ref",),
            "Value error, 'registry.example.com/my-rt:1.0' is not an image reference without tag, "
            "e.g. 'docker.io/vllm/vllm-openai' (give the tag as the version)",
        ),
    ]


# ------------------------------------------------------------------------------------------------ DeploymentCreate


def test_a_deployment_with_defaults() -> None:
    got = DeploymentCreate(name="chat", model="qwen")

    assert got.model_dump() == {
        "name": "chat",
        "model": "qwen",
        "model_version": None,
        "image": None,
        "image_version": None,
        "pool": "local",
        "cluster": None,
        "runtime_args": [],
        "resources": Resources().model_dump(),
        "replicas": 1,
        "autoscale": None,
        "follows": None,  # pinned to its version, not following an alias
        "group": None,  # not shared: only its owner (and admins) see it
        "max_tokens_cap": None,  # the studio's caps on what one request may ask
        "n_cap": None,
    }


@pytest.mark.parametrize(
    ("name", "msg"),
    [
        (
            "Chat_1",
            "Value error, 'Chat_1' is not a valid name: use lowercase letters, digits and '-', "
            "starting and ending with a letter or digit (e.g. 'llama-8b-chat')",
        ),
        ("c" * 60, f"Value error, '{'c' * 60}' is 60 characters; names have at most 53"),
        ("", "Value error, a name is required"),
    ],
)
def test_a_deployment_with_a_bad_name_is_refused(name: str, msg: str) -> None:
    assert messages(DeploymentCreate, name=name, model="qwen") == [(("name",), msg)]


@pytest.mark.parametrize(
    ("replicas", "msg"),
    [(-1, "Input should be greater than or equal to 0"), (65, "Input should be less than or equal to 64")],
)
def test_a_deployment_with_replicas_out_of_range_is_refused(replicas: int, msg: str) -> None:
    assert messages(DeploymentCreate, name="chat", model="qwen", replicas=replicas) == [(("replicas",), msg)]


def test_a_deployment_with_zero_replicas_is_accepted() -> None:
    assert DeploymentCreate(name="chat", model="qwen", replicas=0).replicas == 0


def test_a_deployment_reports_nested_resource_errors_under_resources() -> None:
    got = messages(DeploymentCreate, name="chat", model="qwen", resources={"gpus": 1, "gpu_memory_mib": 1024})

    assert got == [
        (("resources",), "Value error, ask for whole GPUs (gpus) or a GPU memory slice (gpu_memory_mib), not both")
    ]


def test_a_deployment_name_with_a_trailing_newline_is_refused() -> None:
    with pytest.raises(ValidationError):
        DeploymentCreate(name="chat\n", model="qwen")
