"""Names and references users type, and the messages that say how to fix them."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from studio.names import check_image_ref, check_name, check_version, is_repo_id, outside_registry


def refusal(check: Callable[[str], str], value: str) -> str:
    """The message ``check`` refuses ``value`` with; '' when it accepts it."""
    try:
        check(value)
    except ValueError as exc:
        return str(exc)
    return ""


INVALID_NAME = (
    "is not a valid name: use lowercase letters, digits and '-', "
    "starting and ending with a letter or digit (e.g. 'llama-8b-chat')"
)


@pytest.mark.parametrize("name", ["a", "chat", "llama-8b-chat", "0day", "a" * 53, "q-2-5"])
def test_dns_labels_up_to_53_characters_are_names(name: str) -> None:
    assert check_name(name) == name


def test_an_empty_name_is_required() -> None:
    assert refusal(check_name, "") == "a name is required"


def test_a_name_longer_than_53_characters_says_its_length() -> None:
    assert refusal(check_name, "a" * 54) == f"'{'a' * 54}' is 54 characters; names have at most 53"


@pytest.mark.parametrize("name", ["Chat", "llama_8b", "-chat", "chat-", "chat.v1", "my chat", "chät"])
def test_names_outside_dns_1123_say_what_is_allowed(name: str) -> None:
    assert refusal(check_name, name) == f"{name!r} {INVALID_NAME}"


@pytest.mark.parametrize("check", [check_name, check_version, check_image_ref])
def test_a_trailing_newline_is_refused(check: Callable[[str], str]) -> None:
    assert refusal(check, "chat\n") != ""


@pytest.mark.parametrize("version", ["latest", "LATEST", "Latest"])
def test_latest_is_not_a_version(version: str) -> None:
    assert (
        refusal(check_version, version)
        == "'latest' is not a version: pin a tag such as 'v0.11.0' so deployments are repeatable"
    )


@pytest.mark.parametrize("version", ["v0.11.0", "5.23.0", "1.0-cuda12", "2024_06", "latest-cpu", "v" * 128])
def test_docker_tags_are_versions(version: str) -> None:
    assert check_version(version) == version


@pytest.mark.parametrize("version", ["", ".hidden", "-rc", "v1 beta", "v1:2", "v" * 129])
def test_other_versions_say_what_a_tag_may_hold(version: str) -> None:
    assert (
        refusal(check_version, version)
        == f"{version!r} is not a valid tag: letters, digits, '_', '.' and '-', at most 128"
    )


@pytest.mark.parametrize(
    "ref", ["docker.io/vllm/vllm-openai", "vllm/vllm-openai", "localhost:5000/my-rt", "registry.example.com/a/b_c", "x"]
)
def test_image_references_without_tag_pass(ref: str) -> None:
    assert check_image_ref(ref) == ref


@pytest.mark.parametrize("ref", ["vllm/vllm-openai:v0.11.0", "Docker.io/vllm", "vllm//openai", "", "a/b@sha256:00"])
def test_a_tag_or_bad_reference_is_refused_with_an_example(ref: str) -> None:
    assert refusal(check_image_ref, ref) == (
        f"{ref!r} is not an image reference without tag, e.g. 'docker.io/vllm/vllm-openai' "
        "(give the tag as the version)"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Qwen/Qwen2.5-0.5B-Instruct", True),
        ("meta-llama/Llama-3.1-8B", True),
        ("org/name_v1.0", True),
        ("gpt2", False),
        ("/srv/models/demo", False),
        ("./demo", False),
        ("org/name/extra", False),
        ("org/", False),
        ("-org/name", False),
    ],
)
def test_is_repo_id_recognises_hub_repository_ids(value: str, expected: bool) -> None:
    assert is_repo_id(value) is expected


@pytest.mark.parametrize(
    ("ref", "registry"),
    [
        ("registry.example.com/team/server:1.2", "registry.example.com/team"),
        ("registry.example.com/team/server", "registry.example.com/team/"),
        ("registry.example.com/team/sub/server:1", "registry.example.com/team"),
        ("registry.example.com:5000/server:1", "registry.example.com:5000"),
        ("anywhere.example.com/x:1", ""),  # no registry set: nothing to confine to
    ],
)
def test_a_build_may_push_under_the_registry(ref: str, registry: str) -> None:
    assert outside_registry(ref, registry) == ""


@pytest.mark.parametrize(
    ("ref", "registry"),
    [
        ("registry.example.com/team-b/server:1", "registry.example.com/team"),  # a sibling, not a child
        ("registry.example.com/other/server:1", "registry.example.com/team"),
        ("docker.io/team/server:1", "registry.example.com/team"),
        ("registry.example.com.evil.io/team/server:1", "registry.example.com"),
        ("registry.example.com/team", "registry.example.com/team"),  # the registry path itself names no image
        ("registry.example.com/team/../admin/server:1", "registry.example.com/team"),
        ("registry.example.com:5001/server:1", "registry.example.com:5000"),
    ],
)
def test_a_build_may_not_push_outside_the_registry(ref: str, registry: str) -> None:
    assert outside_registry(ref, registry) == (
        f"{ref} is not under COVE_REGISTRY {registry.rstrip('/')}: Cove pushes the images it builds there and "
        "nowhere else"
    )
