"""Datasets through the faces: a real `cove server` over HTTP (a file uploaded past the API's body limit, listed,
previewed; the upload limit; a member seeing only hers), and the CLI in process (add, list, show, preview with
what is trained on, lengths as a histogram, delete)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

import cove
from studio.api.app import PREFIX
from studio.db import Database
from studio.models import ApiKeyCreate
from studio.services import keys
from studio.settings import Settings
from tests.conftest import make_settings
from tests.integration.conftest import CoveServer, cove_env
from tests.integration.test_cli import run
from tests.people import ADMIN, member

LIMIT = 16_384  # the API's body limit here (COVE_MAX_BODY_BYTES)
UPLOAD_LIMIT = 1_000_000  # the upload route's own (COVE_MAX_UPLOAD_BYTES)


def chats(path: Path, n: int, *, bad_lines: tuple[int, ...] = ()) -> Path:
    with path.open("w") as fh:
        for i in range(1, n + 1):
            if i in bad_lines:
                fh.write("{not json\n")
                continue
            turns = [{"role": "user", "content": f"What is {i} squared?"}, {"role": "assistant", "content": str(i * i)}]
            fh.write(json.dumps({"messages": turns}) + "\n")
    return path


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "server", login=True)


@pytest.mark.runtime
def test_an_upload_over_http_is_streamed_past_the_body_limit_then_listed_and_previewed(
    settings: Settings, db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COVE_MAX_BODY_BYTES", str(LIMIT))
    monkeypatch.setenv("COVE_MAX_UPLOAD_BYTES", str(UPLOAD_LIMIT))
    ann = member(db, "ann")
    token = keys.create_key(db=db, actor=ann, data=ApiKeyCreate(name="ann-api", scopes=["datasets:write"])).key
    admin_token = keys.create_key(db=db, actor=ADMIN, data=ApiKeyCreate(name="root", scopes=["*"])).key
    source = chats(tmp_path / "train.jsonl", 1000, bad_lines=(3, 500))
    assert source.stat().st_size > LIMIT
    server = CoveServer(settings, tmp_path / "server.log").start()
    try:
        with cove.Client(settings.gateway_url, token=token) as client:
            added = client.datasets.upload("squares", source)
            v = added.dataset.latest
            assert (added.unchanged, v.rows, v.source_kind, v.source, v.splits) == (
                False,
                1000,
                "upload",
                "train.jsonl",
                {"train": 1000},
            )
            problems = v.report["splits"]["train"]["problems"]
            assert [(p["line"], p["message"]) for p in problems] == [
                (3, "not a JSON object: '{not json'"),
                (500, "not a JSON object: '{not json'"),
            ]
            assert client.datasets.upload("squares", source, new_version=True).unchanged
            assert [(d.name, d.owner, len(d.versions)) for d in client.datasets.list()] == [("squares", "ann", 1)]
            shown = client.datasets.preview("squares", rows=3)
            assert [r.line for r in shown.rows] == [1, 2, 3]
            assert shown.rows[0].messages == [
                {"role": "user", "content": "What is 1 squared?"},
                {"role": "assistant", "content": "1"},
            ]
            assert shown.rows[2].problem == "not a JSON object: '{not json'"
        with httpx.Client(base_url=settings.gateway_url + PREFIX, timeout=30) as http:
            body = b"x" * (UPLOAD_LIMIT + 1)
            too_big = http.post(
                "/datasets/upload",
                params={"name": "big", "filename": "big.jsonl"},
                content=body,
                headers={"Authorization": f"Bearer {token}"},
            )
            assert too_big.status_code == 413
            assert "COVE_MAX_UPLOAD_BYTES" in too_big.json()["error"]["next"]
            admins = http.post(
                "/datasets",
                json={"name": "admins", "source": str(source)},
                headers={"Authorization": f"Bearer {admin_token}"},
            )
            assert admins.status_code == 201, admins.text
            assert admins.headers["Location"] == f"{PREFIX}/datasets/admins"
            refused = http.get("/datasets/admins", headers={"Authorization": f"Bearer {token}"})
            assert refused.status_code == 403
            assert "not yours: owned by admin" in refused.json()["error"]["message"]
            listed = http.get("/datasets", headers={"Authorization": f"Bearer {token}"}).json()
            assert [d["name"] for d in listed["items"]] == ["squares"]
    finally:
        server.stop()
    assert not list((settings.datasets_dir / ".incoming").iterdir())  # the refused upload left nothing


@pytest.mark.runtime
def test_the_cli_uploads_a_local_file_to_a_remote_cove(settings: Settings, db: Database, tmp_path: Path) -> None:
    member(db, "bo", password="bo's long password")
    server = CoveServer(settings, tmp_path / "server.log").start()
    laptop = make_settings(tmp_path / "laptop")
    (tmp_path / "here").mkdir()
    source = chats(tmp_path / "here" / "eval.jsonl", 3)  # on this machine, not the server's

    def cove_cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "studio.cli", *args],
            env=cove_env(laptop),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )

    try:
        logged = cove_cli(
            "login", settings.gateway_url, "--user", "bo", "--password-stdin", stdin="bo's long password\n"
        )
        assert logged.returncode == 0, logged.stderr
        added = cove_cli("dataset", "add", "mine", str(source))
        assert added.returncode == 0, added.stderr
        assert added.stdout.startswith("dataset mine v1: 3 rows (eval 3), messages, ")
        listed = cove_cli("dataset", "list").stdout.splitlines()
        assert [line.split()[:4] for line in listed[1:]] == [["mine", "bo", "1", "3"]]
    finally:
        server.stop()


# ------------------------------------------------------------------------------------------------ the CLI in process


def test_the_cli_adds_shows_previews_measures_and_deletes(
    settings: Settings, db: Database, tmp_path: Path, demo_folder: Path
) -> None:
    source = chats(tmp_path / "squares.jsonl", 30, bad_lines=(2,))
    added = run(settings, "dataset", "add", "squares", str(source), "--description", "numbers")
    assert added.exit_code == 0, added.output
    assert added.output.splitlines() == [
        "storing 1 file (3.1 KiB)",
        "validating rows",
        f"dataset squares v1: 30 rows (train 30), messages, 3.1 KiB, sha256 {added.output.split('sha256 ')[1][:12]}",
        "train: 30 rows: 29 fit to train on, 1 with problems",
        "  train/squares.jsonl:2: not a JSON object: '{not json'",
    ]
    again = run(settings, "dataset", "add", "squares", str(source), "--new-version")
    assert "dataset squares unchanged: version 1 has this content" in again.output
    shown = run(settings, "dataset", "show", "squares:1").output
    assert "source:  folder " + str(source) in shown
    assert "train/squares.jsonl:2: not a JSON object" in shown
    assert run(settings, "model", "add", "demo", str(demo_folder)).exit_code == 0
    preview = run(settings, "dataset", "preview", "squares", "--rows", "1", "--model", "demo", "--max-length", "512")
    assert "<|im_start|>user\nWhat is 1 squared?<|im_end|>" in preview.output
    assert "⟦1<|im_end|>\n⟧" in preview.output  # the answer is what is trained on
    lengths = run(settings, "dataset", "lengths", "squares", "--model", "demo:1", "--max-length", "12")
    assert lengths.exit_code == 0, lengths.output
    text = lengths.output
    assert "29 rows measured" in text
    assert "max_length 12: 29 truncated, 29 with no trainable tokens" in text
    assert "dropped (not fit to train on): 1" in text
    assert "█" in text
    mapped = run(settings, "dataset", "add", "qa", str(source), "--format", "prompt_completion")
    assert mapped.exit_code == 1
    assert "needs columns the data lacks: prompt → 'prompt', completion → 'completion'" in mapped.output
    deleted = run(settings, "dataset", "delete", "squares")
    assert deleted.output == "dataset squares deleted\n"
    assert run(settings, "dataset", "list").output.splitlines()[-1] == "(none)"
