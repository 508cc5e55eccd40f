"""The Datasets and Fine-tune pages, and a version's lineage on the Models page, run headless with AppTest against a
real database: a dataset uploaded with its column map checked, its report and rows; the fine-tune form's defaults
from the preview and its refusal when the pool has no room; a job followed through the service and the controller's
JobRunner on a backend whose tasks do what the test says (tests/fakes/backends.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from studio.db import Database
from studio.finetuning import Progress
from studio.models import DatasetCreate, FineTuneCreate, ModelCreate
from studio.services import datasets, finetunes, models
from studio.settings import Settings
from studio.values import JobStatus
from tests.fakes.backends import InstantBackend
from tests.integration.conftest import page, settle, table, texts
from tests.integration.test_finetunes import runner_pass, succeed, token_of
from tests.people import ADMIN

CHATS = [
    {"messages": [{"role": "user", "content": f"What is {i} plus one?"}, {"role": "assistant", "content": f"{i + 1}."}]}
    for i in range(6)
]


def jsonl(rows: list[object]) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows).encode()


def add_chats(db: Database, settings: Settings, tmp_path: Path, name: str = "sums") -> None:
    path = tmp_path / f"{name}.jsonl"
    path.write_bytes(jsonl(CHATS))
    datasets.add_dataset(db=db, actor=ADMIN, data=DatasetCreate(name=name, source=str(path)), settings=settings)


# ---------------------------------------------------------------------------------------------------- datasets


def test_upload_a_dataset_see_its_columns_then_its_report_and_rows(ui: AppTest, db: Database) -> None:
    at = page(ui, "datasets")
    assert "There is no dataset yet" in texts(at.info)

    at.text_input(key="dataset-name").input("sums")
    at.file_uploader(key="dataset-file").upload("sums.jsonl", jsonl(['{"oops', *CHATS, CHATS[0]]))
    at.run()
    # Detected before registering: the format and the column each part is read from.
    assert "detected format: **messages**" in texts(at.caption)
    assert at.selectbox(key="dataset-format").value.value == "messages"
    assert at.selectbox(key="dataset-column-messages-messages").value == "messages"

    settle(at.button(key="register-dataset").click().run())

    assert not at.error, texts(at.error)
    assert "sums v1 added." in texts(at.success)
    (row,) = table(at, 0)
    assert (row["dataset"], row["version"], row["rows"], row["format"]) == ("sums", 1, 8, "messages")
    assert row["sha256"] == datasets.get_dataset(db=db, actor=ADMIN, name="sums").latest.sha256[:12]
    # The report: the broken line by number, the duplicate.
    metrics = {m.label: m.value for m in at.metric}
    assert (metrics["Rows"], metrics["Fit to train on"], metrics["Duplicates"]) == ("8", "7", "1")
    (problem,) = table(at, 1)
    assert problem["line"] == 1
    assert "not a JSON object" in problem["problem"]
    # The rows as chat messages, the broken one as its text with the problem.
    assert [m.name for m in at.chat_message][:2] == ["user", "assistant"]
    assert "What is 0 plus one?" in texts(at.text)
    assert "not a JSON object" in texts(at.warning)
    assert "add a model first" in texts(at.info)


def test_a_column_map_that_does_not_fit_is_said_per_part_and_blocks_registering(ui: AppTest) -> None:
    at = page(ui, "datasets")
    rows = [{"question": "Hi?", "answer": "Hello."}]
    at.text_input(key="dataset-name").input("qa")
    at.file_uploader(key="dataset-file").upload("qa.jsonl", jsonl(rows))
    at.run()
    assert "no format fits" in texts(at.caption)

    at.selectbox(key="dataset-format").set_value(
        next(o for o in at.selectbox(key="dataset-format").options if "prompt" in o)
    )
    at.run()
    errors = texts(at.error)
    assert "prompt: the prompt_completion format needs a column for prompt" in errors
    assert "completion: the prompt_completion format needs a column for completion" in errors
    assert at.button(key="register-dataset").disabled

    at.selectbox(key="dataset-column-prompt_completion-prompt").set_value("question")
    at.selectbox(key="dataset-column-prompt_completion-completion").set_value("answer").run()
    settle(at.button(key="register-dataset").click().run())
    assert "qa v1 added." in texts(at.success)
    assert table(at, 0)[0]["format"] == "prompt_completion"


def test_a_dataset_in_use_is_not_deleted_saying_which_fine_tune_uses_it(
    ui: AppTest, db: Database, settings: Settings, stub_model: str, tmp_path: Path
) -> None:
    add_chats(db, settings, tmp_path)
    data = FineTuneCreate(name="tune", model="stub", dataset="sums")
    finetunes.create_finetune(db=db, actor=ADMIN, data=data)
    at = page(ui, "datasets")

    at.button(key="delete-dataset").click().run()

    assert "used by fine-tune tune" in texts(at.error)
    assert datasets.list_datasets(db=db, actor=ADMIN)


def test_token_lengths_and_what_is_trained_on_against_the_demo_model(
    ui: AppTest, db: Database, settings: Settings, demo_folder: Path, tmp_path: Path
) -> None:
    models.add_model(
        db=db, actor=ADMIN, cache_dir=settings.models_dir, data=ModelCreate(name="demo", source=str(demo_folder))
    )
    add_chats(db, settings, tmp_path)
    at = page(ui, "datasets")
    assert "P50" not in [m.label for m in at.metric]  # counted only when asked

    at.toggle(key="lengths-on").set_value(True).run()
    assert not at.error, texts(at.error)
    metrics = {m.label: m.value for m in at.metric}
    assert int(metrics["P50"]) > 0
    assert metrics["Truncated"] == "0"
    assert at.get("vega_lite_chart")  # the histogram
    assert "background:#b7f0c0" in texts(at.markdown)  # the trained answer, highlighted

    at.number_input(key="lengths-max").set_value(16).run()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Truncated"] == "6"
    assert "line-through" in texts(at.markdown)  # what the cutoff drops


# -------------------------------------------------------------------------------------------------- fine-tune


@pytest.fixture
def ready(db: Database, settings: Settings, stub_model: str, tmp_path: Path) -> str:
    add_chats(db, settings, tmp_path)
    return stub_model


def test_the_form_takes_the_defaults_for_the_base_s_size_and_starts_a_job(
    ui: AppTest, db: Database, ready: str
) -> None:
    at = page(ui, "finetune")

    assert not at.error, texts(at.error)
    assert at.number_input(key="ft-rank").value == 8  # a tiny base's defaults
    assert at.number_input(key="ft-lr").value == pytest.approx(5e-3)
    assert at.number_input(key="ft-batch").value == 8
    assert at.multiselect(key="ft-targets").value == ["all-linear"]
    assert "q_proj" in at.multiselect(key="ft-targets").options  # the base's own modules
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Training rows"] == "6"
    assert "Fits in pool local" in texts(at.caption)

    at.number_input(key="ft-rank").set_value(4)
    at.multiselect(key="ft-targets").set_value(["q_proj", "v_proj"])
    at.radio(key="ft-length-by").set_value("Max steps").run()
    at.number_input(key="ft-max-steps").set_value(30)
    settle(at.button(key="ft-start").click().run())

    assert not at.error, texts(at.error)
    assert "Started stub-sums" in texts(at.success)
    job = finetunes.get_finetune(db=db, actor=ADMIN, name="stub-sums")
    assert (job.settings.rank, job.settings.target_modules, job.settings.max_steps) == (4, ["q_proj", "v_proj"], 30)
    assert table(at, 0)[0]["fine-tune"] == "stub-sums"  # the page now shows the jobs


def test_a_job_that_does_not_fit_its_pool_is_refused_with_what_is_free(ui: AppTest, ready: str) -> None:
    at = page(ui, "finetune")

    at.number_input(key="ft-cpu").set_value(1000.0).run()

    warning = texts(at.warning)
    assert "Does not fit in pool local" in warning
    assert "free:" in warning
    assert at.button(key="ft-start").disabled


def jobs_page(at: AppTest) -> AppTest:
    at.session_state["finetune_view_next"] = "Jobs"
    return page(at, "finetune")


def test_a_running_job_shows_progress_the_loss_curve_and_cancel_then_resume(
    ui: AppTest, db: Database, settings: Settings, ready: str
) -> None:
    finetunes.create_finetune(db=db, actor=ADMIN, data=FineTuneCreate(name="tune", model="stub", dataset="sums"))
    backend = InstantBackend()
    runner_pass(db, settings, backend)
    token = token_of(settings)
    for step, loss, eval_loss in ((5, 2.0, None), (10, 1.5, 1.7), (15, 1.1, None)):
        progress = Progress(step=step, total_steps=60, loss=loss, eval_loss=eval_loss, eta_s=45, tokens_per_s=1200)
        finetunes.report(db=db, name="tune", token=token, progress=progress)

    at = jobs_page(ui)

    assert "tune · :blue[Running]" in texts(at.markdown)
    bar = at.get("progress")[0]
    assert bar.value == 25  # 15 of 60 steps
    assert "step 15 / 60" in bar.proto.text
    assert "ETA 0m 45s" in bar.proto.text
    assert "1,200 tokens/s" in bar.proto.text
    assert at.get("vega_lite_chart")  # the loss curve
    labels = [b.label for b in at.button]
    assert "Cancel" in labels
    assert "Resume" not in labels

    at.button(key="ft-cancel").click().run()
    assert "Cancelling tune" in texts(settle(at).success)
    assert finetunes.get_finetune(db=db, actor=ADMIN, name="tune").cancelling
    runner_pass(db, settings, backend)  # the controller stops the task: Cancelled
    at.run()
    assert "tune · :orange[Cancelled]" in texts(at.markdown)

    at.button(key="ft-resume").click().run()
    settle(at)
    got = finetunes.get_finetune(db=db, actor=ADMIN, name="tune")
    assert (got.status, got.attempt) == (JobStatus.QUEUED, 2)
    assert "attempt 2" in texts(at.success)


def test_a_succeeded_job_shows_its_metrics_and_deploys_its_version_then_the_model_shows_the_lineage(
    ui: AppTest, db: Database, settings: Settings, ready: str
) -> None:
    finetunes.create_finetune(db=db, actor=ADMIN, data=FineTuneCreate(name="tune", model="stub", dataset="sums"))
    backend = InstantBackend()
    runner_pass(db, settings, backend)
    succeed(settings, backend, "ft-tune-1")
    runner_pass(db, settings, backend)

    at = jobs_page(ui)

    assert "tune · :green[Succeeded]" in texts(at.markdown)
    metrics = {m.label: m.value for m in at.metric}
    assert (metrics["Eval loss"], metrics["Perplexity"]) == ("0.5", "1.65")
    assert "Fine-tuned" in texts(at.markdown)  # base against candidate
    assert "Cancel" not in [b.label for b in at.button]

    at.button(key="ft-deploy").click().run()
    assert at.session_state["deploy_model"] == "stub"
    assert at.session_state["deploy_version"] == 2
    at = page(at, "deploy")
    assert at.selectbox(key="model").value == "stub"
    assert at.selectbox[1].value.version == 2  # the new version is chosen

    at = page(at, "models")
    lineage = texts(at.markdown)
    assert "**Base:** stub@1" in lineage
    assert "**Dataset:** sums@1" in lineage
    assert "**Job:** tune" in lineage
    assert "eval loss 0.5" in lineage
    at.button(key="lineage-job").click().run()  # AppTest follows the switch to the Fine-tune page in this run
    assert "tune · :green[Succeeded]" in texts(at.markdown)
