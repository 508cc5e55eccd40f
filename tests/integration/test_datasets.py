"""Datasets through the real service and store, against SQLite and PostgreSQL: each format, malformed files,
content addressing, a Hub dataset from an offline cache pinned to its commit, the quota, ownership, deleting, and
token lengths against the demo model's chat template."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from studio.db import Database, open_database
from studio.errors import Conflict, Forbidden, InvalidSpec, QuotaExceeded
from studio.models import DatasetCreate, FineTune, ModelCreate
from studio.services import datasets, models, pools
from studio.services.datasets import Upload
from studio.settings import Settings
from studio.values import PoolBase
from tests.conftest import make_settings
from tests.integration.conftest import write_stub_model
from tests.people import ADMIN, member

ALPACA = [{"instruction": f"What is {i} plus one?", "input": "", "output": f"{i + 1}."} for i in range(6)]
CHATS = [
    {"messages": [{"role": "user", "content": f"Say {i}."}, {"role": "assistant", "content": f"{i}, said."}]}
    for i in range(6)
]


@pytest.fixture
def db(database_url: str) -> Database:
    found = open_database(database_url)
    yield found
    found.dispose()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "cove")


def jsonl(path: Path, rows: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def add(db: Database, settings: Settings, name: str, source: Path | str, **kw: Any) -> Any:
    actor = kw.pop("actor", ADMIN)
    data = DatasetCreate(name=name, source=str(source), **kw)
    return datasets.add_dataset(db=db, actor=actor, data=data, settings=settings)


def write(kind: str, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "jsonl":
        return jsonl(folder / "chats.jsonl", ALPACA)
    if kind == "json-array":
        (folder / "chats.json").write_text(json.dumps(ALPACA))
        return folder / "chats.json"
    if kind == "json-lines":
        return jsonl(folder / "chats.json", ALPACA)
    if kind == "csv":
        with (folder / "chats.csv").open("w", newline="") as fh:
            out = csv.DictWriter(fh, fieldnames=["instruction", "input", "output"])
            out.writeheader()
            out.writerows(ALPACA)
        return folder / "chats.csv"
    pq.write_table(pa.Table.from_pylist(ALPACA), folder / "chats.parquet")
    return folder / "chats.parquet"


@pytest.mark.parametrize("kind", ["jsonl", "json-array", "json-lines", "csv", "parquet"])
def test_each_format_is_stored_by_content_and_validated(
    db: Database, settings: Settings, tmp_path: Path, kind: str
) -> None:
    source = write(kind, tmp_path / "src")
    added = add(db, settings, "sums", source)
    v = added.dataset.latest
    assert (added.version, added.unchanged, v.rows, v.splits, v.format) == (1, False, 6, {"train": 6}, "alpaca")
    assert v.builder == {"csv": "csv", "parquet": "parquet"}.get(kind, "json")
    assert Path(v.path) == settings.datasets_dir / v.sha256
    stored = Path(v.path) / v.files["train"][0]
    assert stored.read_bytes() == source.read_bytes()
    assert v.report["splits"]["train"]["problem_count"] == 0
    assert v.size_bytes == source.stat().st_size
    assert not list((settings.datasets_dir / ".incoming").iterdir())  # nothing half-made left behind


def test_a_folder_gives_train_and_eval_splits_and_counts_duplicates_and_overlap(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    jsonl(tmp_path / "src" / "train.jsonl", [*CHATS, CHATS[0]])
    jsonl(tmp_path / "src" / "validation.jsonl", [CHATS[1], {"messages": [{"role": "user", "content": "new"}]}])
    v = add(db, settings, "chats", tmp_path / "src").dataset.latest
    assert v.splits == {"train": 7, "eval": 2}
    assert v.files == {"train": ["train/train.jsonl"], "eval": ["eval/validation.jsonl"]}
    train, held = v.report["splits"]["train"], v.report["splits"]["eval"]
    assert (train["duplicates"], held["shared_with_train"], held["problem_count"]) == (1, 1, 1)
    assert held["problems"][0]["line"] == 2
    assert "last turn is not the assistant's" in held["problems"][0]["message"]


def test_bad_json_lines_are_problems_on_their_lines_first_few_shown_rest_counted(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    rows: list[Any] = list(ALPACA)
    rows += ["{not json"] * 25
    v = add(db, settings, "messy", jsonl(tmp_path / "messy.jsonl", rows)).dataset.latest
    report = v.report["splits"]["train"]
    assert (report["rows"], report["valid"], report["problem_count"], len(report["problems"])) == (31, 6, 25, 20)
    assert report["problems"][0] == {
        "file": "train/messy.jsonl",
        "line": 7,
        "message": "not a JSON object: '{not json'",
    }


def test_a_csv_without_the_mapped_columns_is_refused_naming_them_and_a_corrected_map_fits(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    source = tmp_path / "qa.csv"
    source.write_text("question,answer\nWhat is up?,The sky.\n")
    with pytest.raises(InvalidSpec, match="no chat format fits the columns \\(question, answer\\)"):
        add(db, settings, "qa", source)
    with pytest.raises(InvalidSpec, match="needs columns the data lacks: completion → 'completion'") as caught:
        add(db, settings, "qa", source, format="prompt_completion", columns={"prompt": "question"})
    assert "its columns: question, answer" in str(caught.value)
    with pytest.raises(InvalidSpec, match="leaves 'completion' empty"):
        add(db, settings, "qa", source, columns={"prompt": "question", "completion": ""})
    v = add(db, settings, "qa", source, columns={"prompt": "question", "completion": "answer"}).dataset.latest
    assert (v.format, v.columns, v.rows) == ("prompt_completion", {"prompt": "question", "completion": "answer"}, 1)
    assert datasets.list_datasets(db=db, actor=ADMIN)[0].name == "qa"  # the refusals made nothing


def test_an_empty_file_is_refused_and_leaves_nothing_in_the_store(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(InvalidSpec, match="no chat format fits the columns \\(none\\)"):
        add(db, settings, "empty", tmp_path / "empty.jsonl")
    assert [p.name for p in settings.datasets_dir.iterdir() if not p.name.startswith(".")] == []
    assert datasets.list_datasets(db=db, actor=ADMIN) == []


def test_same_bytes_same_sha_and_no_new_version(db: Database, settings: Settings, tmp_path: Path) -> None:
    source = jsonl(tmp_path / "a" / "chats.jsonl", CHATS)
    first = add(db, settings, "chats", source)
    again = add(db, settings, "chats", source, new_version=True)
    assert (again.unchanged, again.version, len(again.dataset.versions)) == (True, 1, 1)
    with pytest.raises(Conflict, match="--new-version"):
        add(db, settings, "chats", source)
    other = add(db, settings, "copy", jsonl(tmp_path / "b" / "chats.jsonl", CHATS))
    assert other.dataset.latest.sha256 == first.dataset.latest.sha256  # the same folder
    changed = add(db, settings, "chats", jsonl(tmp_path / "c" / "chats.jsonl", CHATS[:3]), new_version=True)
    assert (changed.unchanged, changed.version) == (False, 2)
    assert changed.dataset.latest.sha256 != first.dataset.latest.sha256
    # the files stay while another dataset's version shares them
    datasets.delete_dataset(db=db, actor=ADMIN, name="chats", settings=settings)
    assert Path(other.dataset.latest.path).is_dir()
    assert not Path(changed.dataset.latest.path).exists()


def test_an_upload_is_moved_into_the_store(db: Database, settings: Settings, tmp_path: Path) -> None:
    from studio import datastore

    body = (json.dumps(c).encode() + b"\n" for c in CHATS)
    received = datastore.receive(body, "eval-set.jsonl", settings.datasets_dir, limit=10_000)
    added = datasets.add_dataset(
        db=db,
        actor=ADMIN,
        data=DatasetCreate(name="up", source="eval-set.jsonl"),
        settings=settings,
        upload=Upload(received, "eval-set.jsonl"),
    )
    v = added.dataset.latest
    assert (v.source_kind, v.source, v.splits) == ("upload", "eval-set.jsonl", {"eval": 6})
    assert not received.parent.exists()
    with pytest.raises(QuotaExceeded, match="over the limit of 10 B"):
        datastore.receive(iter([b"x" * 11]), "big.jsonl", settings.datasets_dir, limit=10)


def test_a_hub_dataset_comes_from_the_offline_cache_pinned_to_its_commit(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = settings.models_dir / "datasets--acme--chats"
    jsonl(repo / "snapshots" / commit / "data" / "train.jsonl", CHATS)
    jsonl(repo / "snapshots" / commit / "data" / "test.jsonl", CHATS[:2])
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    v = add(db, settings, "acme", "hf:acme/chats").dataset.latest
    assert (v.source_kind, v.source, v.revision, v.splits) == ("hf", "acme/chats", commit, {"train": 6, "eval": 2})
    assert v.report["splits"]["eval"]["shared_with_train"] == 2
    pinned = add(db, settings, "acme", f"hf:acme/chats@{commit}", new_version=True)
    assert pinned.unchanged
    from studio.errors import SourceUnavailable

    with pytest.raises(SourceUnavailable, match="not in the local dataset cache"):
        add(db, settings, "other", "hf:acme/missing")


def test_the_owners_quota_and_the_free_space_are_checked_before_copying(db: Database, tmp_path: Path) -> None:
    small = make_settings(tmp_path / "cove", dataset_quota_gib=1000 / 1024**3)  # 1000 bytes
    source = jsonl(tmp_path / "chats.jsonl", CHATS * 3)
    with pytest.raises(QuotaExceeded, match=r"needs 1.8 KiB and admin's dataset quota has 1000 B left") as caught:
        add(db, small, "big", source)
    assert "COVE_DATASET_QUOTA_GIB" in caught.value.hint
    assert not (small.datasets_dir / ".incoming").exists() or not list((small.datasets_dir / ".incoming").iterdir())


def test_a_member_sees_only_their_own_and_may_not_read_a_folder_on_the_server(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    from studio import datastore

    ann, bob = member(db, "ann"), member(db, "bob")
    with pytest.raises(Forbidden, match="only an admin may register a dataset from a file or folder"):
        add(db, settings, "mine", jsonl(tmp_path / "c.jsonl", CHATS), actor=ann)
    received = datastore.receive(iter([json.dumps(CHATS[0]).encode()]), "c.jsonl", settings.datasets_dir, limit=999)
    datasets.add_dataset(
        db=db, actor=ann, data=DatasetCreate(name="anns", source="c.jsonl"), settings=settings,
        upload=Upload(received, "c.jsonl"),
    )  # fmt: skip
    assert [d.name for d in datasets.list_datasets(db=db, actor=bob)] == []
    assert [d.name for d in datasets.list_datasets(db=db, actor=ann)] == ["anns"]
    with pytest.raises(Forbidden, match="dataset 'anns' is not yours: owned by ann"):
        datasets.get_dataset(db=db, actor=bob, name="anns")
    with pytest.raises(Forbidden):
        datasets.preview(db=db, actor=bob, name="anns")


def test_delete_is_refused_while_a_fine_tune_uses_a_version(db: Database, settings: Settings, tmp_path: Path) -> None:
    v = add(db, settings, "chats", jsonl(tmp_path / "chats.jsonl", CHATS)).dataset.latest
    pools.sync_detected_pools(db=db, cluster="default", detected=[PoolBase(name="local", cpu_cores=4, memory_mib=8192)])
    models.add_model(
        db=db, actor=ADMIN, cache_dir=settings.models_dir,
        data=ModelCreate(name="base", source=str(write_stub_model(tmp_path / "stub"))),
    )  # fmt: skip
    with db.session() as session:
        from sqlmodel import select

        from studio.models import DatasetVersion, ModelVersion, Pool

        session.add(
            FineTune(
                name="tune-1",
                owner="admin",
                base_version_id=session.exec(select(ModelVersion.id)).one(),
                dataset_version_id=session.exec(select(DatasetVersion.id)).one(),
                pool_id=session.exec(select(Pool.id).where(Pool.name == "local")).one(),
                target_model="base",
            )
        )
        session.commit()
    with pytest.raises(Conflict, match="dataset 'chats' is used by fine-tune tune-1"):
        datasets.delete_dataset(db=db, actor=ADMIN, name="chats", settings=settings)
    assert Path(v.path).is_dir()


# ------------------------------------------------------------------------------------------------ token lengths


@pytest.fixture
def with_demo(db: Database, settings: Settings, demo_folder: Path) -> Database:
    models.add_model(
        db=db, actor=ADMIN, cache_dir=settings.models_dir, data=ModelCreate(name="demo", source=str(demo_folder))
    )
    return db


def test_token_lengths_against_the_demo_models_template_count_truncated_untrainable_and_dropped(
    with_demo: Database, settings: Settings, tmp_path: Path
) -> None:
    long = {"messages": [{"role": "user", "content": "word " * 200}, {"role": "assistant", "content": "ok"}]}
    rows = [*CHATS, long, {"messages": [{"role": "user", "content": "no answer"}]}]
    add(with_demo, settings, "chats", jsonl(tmp_path / "chats.jsonl", rows))
    found = datasets.lengths(db=with_demo, actor=ADMIN, name="chats", model="demo", max_length=64)
    stats = found.stats
    assert (found.model_version, stats.rows, stats.dropped, stats.max_length) == (1, 7, 1, 64)
    assert (stats.truncated, stats.untrainable) == (1, 1)  # the long prompt fills the cutoff
    assert stats.p50 < 64 < stats.max
    assert stats.p50 <= stats.p95 <= stats.p99 <= stats.max
    assert sum(b.rows for b in stats.bins) == 7
    roomy = datasets.lengths(db=with_demo, actor=ADMIN, name="chats", model="demo", max_length=4096).stats
    assert (roomy.truncated, roomy.untrainable) == (0, 0)


def test_the_preview_marks_the_last_assistant_turn_as_trained_on(
    with_demo: Database, settings: Settings, tmp_path: Path
) -> None:
    add(with_demo, settings, "chats", jsonl(tmp_path / "chats.jsonl", ["{oops", *CHATS]))
    shown = datasets.preview(db=with_demo, actor=ADMIN, name="chats", rows=2, model="demo", max_length=512)
    bad, good = shown.rows
    assert (bad.line, bad.raw, bad.messages, bad.segments) == (1, "{oops", None, None)
    assert "not a JSON object" in (bad.problem or "")
    assert good.messages == CHATS[0]["messages"]
    trained = "".join(s.text for s in good.segments or [] if s.trained)
    untrained = "".join(s.text for s in good.segments or [] if not s.trained)
    assert trained.startswith("0, said.")
    assert "Say 0." in untrained
    assert "0, said." not in untrained
    cut = datasets.preview(db=with_demo, actor=ADMIN, name="chats", rows=2, model="demo", max_length=4)
    assert any(not s.kept for s in cut.rows[1].segments or [])


def test_a_tokenizer_without_a_chat_template_is_refused_saying_how_to_give_one(
    with_demo: Database, settings: Settings, tmp_path: Path, demo_folder: Path
) -> None:
    bare = tmp_path / "bare"
    shutil.copytree(demo_folder, bare)
    (bare / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((bare / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(config))
    models.add_model(
        db=with_demo, actor=ADMIN, cache_dir=settings.models_dir, data=ModelCreate(name="bare", source=str(bare))
    )
    add(with_demo, settings, "chats", jsonl(tmp_path / "chats.jsonl", CHATS))
    with pytest.raises(InvalidSpec, match="has no chat template") as caught:
        datasets.lengths(db=with_demo, actor=ADMIN, name="chats", model="bare")
    assert "chat_template.jinja" in caught.value.hint
    assert "tokenizer_config.json" in caught.value.hint


# ------------------------------------------------------------------------------------------------ 100k rows


# Validates the file in a process of its own and reports how far its peak memory (ru_maxrss) grew past what it held
# before it started: the process's peak is its own, whatever the test session holds.
MEASURED = """
import json, resource, sys
from pathlib import Path
from studio import datastore
src = Path(sys.argv[1])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
checked = datastore.check(src.parent, {"train": [src.name]}, "json", fmt=None, columns=None)
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
print(json.dumps({"report": checked.report["splits"]["train"], "grown": grown}))
"""


def test_a_100k_row_file_is_validated_without_being_held_whole(tmp_path: Path) -> None:
    source = tmp_path / "big.jsonl"
    with source.open("w") as fh:
        for i in range(100_000):
            turn = {"role": "user", "content": f"Question {i}: " + "tell me about the sea " * 8}
            fh.write(json.dumps({"messages": [turn, {"role": "assistant", "content": f"Answer {i}."}]}) + "\n")
        fh.write("{broken\n")
    size = source.stat().st_size
    done = subprocess.run([sys.executable, "-c", MEASURED, str(source)], capture_output=True, text=True, check=True)
    measured = json.loads(done.stdout)
    report = measured["report"]
    assert (report["rows"], report["valid"], report["problems"][0]["line"]) == (100_001, 100_000, 100_001)
    # held whole, the rows as Python objects would take several times the file's size; what grows with the rows
    # is the duplicate check's fingerprints
    assert measured["grown"] < size, f"grew {measured['grown'] / 2**20:.1f} MiB for a {size / 2**20:.1f} MiB file"
