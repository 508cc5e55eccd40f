"""Cove's error tree: every error says what went wrong and, where there is one, what to do next."""

from __future__ import annotations

import pytest

from studio.errors import (
    BackendUnavailable,
    Conflict,
    CoveError,
    DatabaseError,
    InvalidSpec,
    NotFound,
    PortInUse,
    QuotaExceeded,
    RuntimeUnavailable,
    SourceUnavailable,
)


def test_the_message_is_followed_by_the_hint() -> None:
    error = QuotaExceeded("needs 4 CPU cores", hint="free in pool 'local': 2 CPU cores")

    assert str(error) == "needs 4 CPU cores (free in pool 'local': 2 CPU cores)"
    assert (error.message, error.hint, error.args) == (
        "needs 4 CPU cores",
        "free in pool 'local': 2 CPU cores",
        ("needs 4 CPU cores",),
    )


def test_without_a_hint_only_the_message_shows() -> None:
    assert str(NotFound("deployment 'chat' does not exist")) == "deployment 'chat' does not exist"


def test_a_class_default_hint_is_used_when_none_is_given() -> None:
    class Offline(SourceUnavailable):
        hint_default = "connect to the Hub or give a folder"

    assert (
        str(Offline("cannot reach huggingface.co"))
        == "cannot reach huggingface.co (connect to the Hub or give a folder)"
    )
    assert str(Offline("x", hint="retry")) == "x (retry)"


def test_a_port_in_use_is_a_conflict() -> None:
    with pytest.raises(Conflict) as raised:
        raise PortInUse("port 8080 is taken", hint="set COVE_PORT")

    assert isinstance(raised.value, CoveError)
    assert str(raised.value) == "port 8080 is taken (set COVE_PORT)"


@pytest.mark.parametrize(
    "kind",
    [
        NotFound,
        Conflict,
        PortInUse,
        InvalidSpec,
        QuotaExceeded,
        SourceUnavailable,
        RuntimeUnavailable,
        BackendUnavailable,
        DatabaseError,
    ],
)
def test_every_error_is_caught_as_a_cove_error(kind: type[CoveError]) -> None:
    with pytest.raises(CoveError) as raised:
        raise kind("what went wrong", hint="what to do")

    assert str(raised.value) == "what went wrong (what to do)"
