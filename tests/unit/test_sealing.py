"""Secrets in the database are sealed under the studio's key: readable back with it, refused without it."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from studio.errors import InvalidSpec
from studio.sealing import seal, studio_key, unseal
from tests.conftest import make_settings


def test_sealed_text_reads_back_with_its_key_only() -> None:
    sealed = seal("users: [{name: ops, user: {token: t0k3n}}]", "key one")
    assert "t0k3n" not in sealed
    assert seal("same", "key one") != seal("same", "key one")  # a fresh IV each time
    assert unseal(sealed, "key one", what="it") == "users: [{name: ops, user: {token: t0k3n}}]"
    with pytest.raises(InvalidSpec) as raised:
        unseal(sealed, "key two", what="the kubeconfig of cluster 'east'")
    assert (
        raised.value.message
        == "the kubeconfig of cluster 'east' cannot be read with this studio's key (COVE_SECRET_KEY)"
    )
    with pytest.raises(InvalidSpec):
        unseal(sealed[:-4] + "AAAA", "key one", what="it")  # altered


def test_the_studio_key_is_the_setting_or_made_once_for_its_owner_only(tmp_path: Path) -> None:
    assert studio_key(make_settings(tmp_path / "a", secret_key="from the Secret")) == "from the Secret"
    settings = make_settings(tmp_path / "b")
    made = studio_key(settings)
    assert len(made) >= 40
    assert studio_key(settings) == made  # kept
    assert stat.S_IMODE((settings.home / "secret_key").stat().st_mode) == 0o600
