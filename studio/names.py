"""Names and references users type: checked once, here, with messages that say how to fix them."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

MAX_NAME = 53  # a DNS-1123 label is 63; Kubernetes objects built from a name append up to 10 characters
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# registry/path, no tag: the version is kept apart so that "latest" can be refused.
_IMAGE_REF = re.compile(r"^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*$")
_VERSION = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


def check_name(value: str) -> str:
    """A DNS-1123 label of at most 53 characters; raises ValueError saying what is wrong."""
    if not value:
        raise ValueError("a name is required")
    if len(value) > MAX_NAME:
        raise ValueError(f"{value!r} is {len(value)} characters; names have at most {MAX_NAME}")
    if not _NAME.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid name: use lowercase letters, digits and '-', "
            "starting and ending with a letter or digit (e.g. 'llama-8b-chat')"
        )
    return value


def check_image_ref(value: str) -> str:
    if not _IMAGE_REF.fullmatch(value):
        raise ValueError(
            f"{value!r} is not an image reference without tag, e.g. 'docker.io/vllm/vllm-openai' "
            "(give the tag as the version)"
        )
    return value


def check_version(value: str) -> str:
    if value.lower() == "latest":
        raise ValueError("'latest' is not a version: pin a tag such as 'v0.11.0' so deployments are repeatable")
    if not _VERSION.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid tag: letters, digits, '_', '.' and '-', at most 128")
    return value


def is_repo_id(value: str) -> bool:
    """True for ``org/name`` as the Hugging Face Hub spells repository ids."""
    return bool(_REPO_ID.fullmatch(value))


Name = Annotated[str, AfterValidator(check_name)]
ImageRef = Annotated[str, AfterValidator(check_image_ref)]
Version = Annotated[str, AfterValidator(check_version)]


def outside_registry(ref: str, registry: str) -> str:
    """Why an image built by Cove may not be pushed to ``ref`` (a reference, with or without its tag) under
    ``registry`` (COVE_REGISTRY: a host with an optional path), or '' if it may. A reference lies under the
    registry when it is the registry's host and path followed by ``/`` and more path: a sibling path that only
    starts with the same characters (``team-b`` beside ``team``) is outside. No registry set: nothing to confine
    to, so ''."""
    base = registry.strip().rstrip("/")
    if not base:
        return ""
    path = ref.split("@", 1)[0]
    if path.startswith(base + "/") and path[len(base) + 1 :] and ".." not in path.split("/"):
        return ""
    return f"{ref} is not under COVE_REGISTRY {base}: Cove pushes the images it builds there and nowhere else"
