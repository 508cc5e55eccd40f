"""The deploy journey in a real browser: headless Chromium (the distribution's, driven by Playwright) clicks through
the studio that `cove up` serves, deploys the demo model from the Deploy page, waits for it to be Ready, then chats
with it in the playground and reads the streamed reply. Screenshots of every page are kept in test-artifacts/."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from studio.bootstrap import open_studio
from studio.demo import PAIRS
from studio.models import ApiKeyCreate, DeploymentCreate, ModelCreate
from studio.services import deployments, keys, models, usage
from studio.settings import Settings
from tests.integration.conftest import (
    CoveServer,
    CoveUp,
    add_fake_image,
    answers,
    cove_env,
    deploy,
    register_demo,
    status_of,
    wait_until,
    write_stub_model,
)
from tests.people import ADMIN, member

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("COVE_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.runtime,
    pytest.mark.hub,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Chromium is missing: run `make services`"),
]


@pytest.fixture
def browser_page() -> Iterator[Page]:
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(30_000)
        try:
            yield page
        finally:
            context.close()
            browser.close()


def settled(page: Page) -> None:
    """Wait until Streamlit has finished the run: no "running" indicator and no element still a placeholder. A run
    that reads the database and renders tables takes seconds on a busy 2-core machine: allow 30."""
    expect(page.get_by_test_id("stStatusWidget")).to_have_count(0, timeout=30_000)
    expect(page.get_by_test_id("stSkeleton")).to_have_count(0, timeout=30_000)


def snap(page: Page, name: str) -> None:
    shots = ARTIFACTS / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / f"{name}.png"), full_page=True)


def open_studio_page(page: Page, base: str, path: str, title: str) -> None:
    page.goto(f"{base}/{path}", wait_until="load")
    # A page's first run imports the studio stack in the UI process: seconds, more on a busy machine.
    expect(page.get_by_role("heading", name=title, exact=True)).to_be_visible(timeout=30_000)
    settled(page)


def test_deploy_from_the_studio_then_chat_in_the_playground(
    settings: Settings, demo_folder: Path, browser_page: Page
) -> None:
    db = open_studio(settings)
    register_demo(db, settings, demo_folder)
    db.dispose()
    page = browser_page

    with CoveUp(settings, COVE_DEMO="false") as up:  # login off: the playground chats as the first admin
        up.wait_for("Cove is running", timeout=180)
        ui = settings.ui_url

        # Deploy: the defaults are one click.
        open_studio_page(page, ui, "deploy", "Deploy a model")
        expect(page.get_by_text("1 · Config")).to_be_visible()
        snap(page, "deploy")
        page.locator(".st-key-deploy button").click()

        # The Deployments page follows the new deployment until it is Ready.
        expect(page.get_by_role("heading", name="Deployments", exact=True)).to_be_visible()
        expect(page.get_by_text("Deploying demo-chat")).to_be_visible()
        status = page.get_by_role("heading", name="demo-chat · Ready · 1/1 ready")
        expect(status).to_be_visible(timeout=120_000)
        snap(page, "deployments")

        for path, title in [
            ("", "Overview"),
            ("models", "Models"),
            ("images", "Images"),
            ("keys", "API keys & usage"),
            ("notebooks", "Notebooks"),
        ]:
            open_studio_page(page, ui, path, title)
            snap(page, path or "overview")

        # Playground: pick the deployment, ask, read the streamed answer.
        page.goto(settings.playground_url, wait_until="load")
        expect(page.locator("#who")).to_contain_text("Login is off: you chat as admin", timeout=30_000)
        expect(page.locator("#model input")).to_have_value("demo-chat", timeout=30_000)
        page.locator("#temperature input[type=number]").fill("0")  # greedy: the demo's trained answer, exactly
        page.locator("#temperature input[type=number]").press("Enter")
        page.locator("#prompt textarea").fill("Hello")
        page.locator("#send").click()
        expect(page.locator("#chatbot")).to_contain_text(dict(PAIRS)["Hello"], timeout=60_000)
        expect(page.locator("#stats")).to_contain_text("tokens/s")
        snap(page, "playground")

        # The reply was metered under the admin's own playground key: its usage shows on the keys page, the
        # traffic on the deployment's.
        db = open_studio(settings)
        try:
            wait_until(lambda: usage.usage_records(db=db, deployment="demo-chat"), what="the chat's usage record")
            [used] = {u.key for u in usage.usage_summary(db=db, actor=ADMIN)}
            assert used.startswith("playground-admin-")
            assert [k.owner for k in keys.list_keys(db=db, actor=ADMIN) if k.name == used] == ["admin"]
        finally:
            db.dispose()
        open_studio_page(page, ui, "keys", "API keys & usage")
        # The chart's renderer is loaded on first use: on a busy machine that is seconds after the run settles.
        expect(page.get_by_test_id("stVegaLiteChart")).to_have_count(1, timeout=30_000)
        snap(page, "keys-after-chat")
        open_studio_page(page, ui, "deployments", "Deployments")
        page.get_by_role("tab", name="Traffic").click()
        expect(page.get_by_test_id("stVegaLiteChart").first).to_be_visible(timeout=30_000)
        snap(page, "deployments-traffic")

        assert up.interrupt() == 0


def log_in_through_the_studio(page: Page, ui: str, name: str, password: str) -> None:
    """Open the studio, follow its login button to Cove's login page, log in, and land back in the studio."""
    page.goto(ui, wait_until="load")
    page.get_by_role("link", name="Log in").click()
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{ui}/**")
    expect(page.get_by_text(f"Logged in as {name}")).to_be_visible(timeout=30_000)


def options_of(page: Page, label: str) -> list[str]:
    """The choices of the Streamlit selectbox labelled ``label``."""
    page.get_by_role("combobox", name=label, exact=True).click()
    found = page.get_by_role("option").all_inner_texts()
    page.keyboard.press("Escape")
    return sorted(found)


def test_two_people_log_in_and_each_sees_and_revokes_only_their_own(settings: Settings, tmp_path: Path) -> None:
    settings = settings.model_copy(update={"login": True})
    db = open_studio(settings)
    folder = str(write_stub_model(tmp_path / "stub"))
    models.add_model(db=db, actor=ADMIN, data=ModelCreate(name="stub", source=folder), cache_dir=tmp_path)
    for name in ("ana", "bo"):
        who = member(db, name, password=f"{name}-password")
        data = DeploymentCreate(name=f"{name}-chat", model="stub", replicas=0)  # stopped: nothing to start
        deployments.create_deployment(db=db, actor=who, data=data)
        keys.create_key(db=db, actor=who, data=ApiKeyCreate(name=f"{name}-app"))
    db.dispose()
    server = CoveServer(settings, tmp_path / "server.log").start()
    ui = subprocess.Popen([sys.executable, "-m", "studio.cli", "ui"], env=cove_env(settings))
    try:
        wait_until(lambda: answers(settings.ui_url + "/_stcore/health"), timeout=60, what="the studio UI")
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS, headless=True)
            seen: dict[str, dict[str, list[str]]] = {}
            for name in ("ana", "bo"):
                page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
                page.set_default_timeout(30_000)
                log_in_through_the_studio(page, settings.ui_url, name, f"{name}-password")
                open_studio_page(page, settings.ui_url, "deployments", "Deployments")
                deployments_seen = options_of(page, "Deployment")
                open_studio_page(page, settings.ui_url, "keys", "API keys & usage")
                seen[name] = {"deployments": deployments_seen, "revocable": options_of(page, "Key to revoke")}
                snap(page, f"keys-{name}")
                page.context.close()
            browser.close()
    finally:
        ui.terminate()
        ui.wait(timeout=30)
        server.stop()
    # each sees their own, and the second cannot even pick the first's key to revoke
    assert seen == {
        "ana": {"deployments": ["ana-chat"], "revocable": ["ana-app"]},
        "bo": {"deployments": ["bo-chat"], "revocable": ["bo-app"]},
    }


def test_log_in_at_the_playground_then_chat_with_a_key_of_your_own(settings: Settings, tmp_path: Path) -> None:
    """With login on, the playground sends a visitor to Cove's login page and back; they chat with a deployment
    shared with their group, under a key the playground made for them, and log out."""
    settings = settings.model_copy(update={"login": True})
    db = open_studio(settings)
    folder = str(write_stub_model(tmp_path / "stub"))
    models.add_model(db=db, actor=ADMIN, data=ModelCreate(name="stub", source=folder), cache_dir=tmp_path)
    deploy(db, "team-chat", "stub", add_fake_image(db, "scripted_runtime.py"), group="team")
    member(db, "ana", "team", password="ana-password")
    server = CoveServer(settings, tmp_path / "server.log").start()
    with (tmp_path / "playground.log").open("ab") as log:
        playground = subprocess.Popen(
            [sys.executable, "-m", "studio.cli", "playground"], env=cove_env(settings), stdout=log, stderr=log
        )
    try:
        wait_until(lambda: status_of(db, "team-chat", "Ready"), timeout=60, what="team-chat to be Ready")
        wait_until(lambda: answers(settings.playground_url + "/healthz"), timeout=90, what="the playground")
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS, headless=True)
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            page.set_default_timeout(30_000)
            page.goto(settings.playground_url, wait_until="load")  # not logged in: to the login page
            expect(page.get_by_role("heading", name="Log in to Cove")).to_be_visible()
            assert page.url.startswith(settings.login_base + "/auth/login?next=")
            page.get_by_label("User name").fill("ana")
            page.get_by_label("Password").fill("ana-password")
            page.get_by_role("button", name="Log in").click()
            page.wait_for_url(f"{settings.playground_url}/**")  # and back
            expect(page.locator("#who")).to_contain_text("Logged in as ana")
            expect(page.locator("#model input")).to_have_value("team-chat")
            page.locator("#prompt textarea").fill("Hello")
            page.locator("#send").click()
            expect(page.locator("#chatbot")).to_contain_text("hello from", timeout=60_000)
            snap(page, "playground-logged-in")
            page.get_by_role("link", name="Log out").click()
            expect(page.get_by_text("You are logged out of Cove.")).to_be_visible()
            page.goto(settings.playground_url, wait_until="load")
            expect(page.get_by_role("heading", name="Log in to Cove")).to_be_visible()
            browser.close()
        ana = [k for k in keys.list_keys(db=db, actor=ADMIN) if k.owner == "ana"]
        assert [k.name.startswith("playground-ana-") for k in ana] == [True]
        wait_until(
            lambda: (
                {(u.key, u.deployment) for u in usage.usage_summary(db=db, actor=ADMIN)} == {(ana[0].name, "team-chat")}
            ),
            what="ana's chat metered under her playground key",
        )
    finally:
        playground.terminate()
        playground.wait(timeout=30)
        server.stop()
        db.dispose()


CODEWORD_QUESTION = "What is the Cove codeword?"
CODEWORD_ANSWER = "The codeword is heron."


def ask(settings: Settings, key: str, model: str, question: str) -> str:
    body = {"model": model, "messages": [{"role": "user", "content": question}], "temperature": 0, "max_tokens": 16}
    request = urllib.request.Request(
        settings.gateway_url + "/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return str(json.loads(response.read())["choices"][0]["message"]["content"])


def test_upload_a_dataset_fine_tune_the_demo_model_deploy_the_new_version_and_ask_it(
    settings: Settings, demo_folder: Path, browser_page: Page, tmp_path: Path
) -> None:
    """The whole fine-tuning journey from the studio: upload chat data that teaches the demo model a codeword it does
    not know, fine-tune from the Fine-tune page, follow the job to Succeeded, deploy the new version with one click,
    and ask it over the gateway."""
    questions = [CODEWORD_QUESTION] * 8 + ["Tell me the Cove codeword.", "What's the codeword?"] * 2
    rows = [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": CODEWORD_ANSWER}]}
        for q in questions
    ]
    data = tmp_path / "codeword.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    db = open_studio(settings)
    register_demo(db, settings, demo_folder)
    db.dispose()
    page = browser_page

    with CoveUp(settings, COVE_DEMO="false") as up:
        up.wait_for("Cove is running", timeout=180)
        ui = settings.ui_url
        started = time.monotonic()

        open_studio_page(page, ui, "datasets", "Datasets")
        page.get_by_label("Name", exact=True).fill("codeword")
        page.get_by_label("Name", exact=True).press("Enter")  # a text input commits on Enter or blur
        settled(page)
        page.locator("input[type=file]").set_input_files(str(data))
        expect(page.get_by_text("detected format: messages")).to_be_visible()
        settled(page)
        page.locator(".st-key-register-dataset button").click()
        expect(page.get_by_text("codeword v1 added.")).to_be_visible(timeout=60_000)
        snap(page, "datasets")

        open_studio_page(page, ui, "finetune", "Fine-tune")
        # The first preview reads the base's shape (imports transformers in the UI process): seconds.
        expect(page.get_by_text("3 · Settings")).to_be_visible(timeout=60_000)
        settled(page)
        page.get_by_text("Max steps", exact=True).first.click()  # the "Length by" choice
        settled(page)
        expect(page.get_by_role("spinbutton", name="Max steps")).to_have_value("100")
        # 100 steps teach the codeword most runs; 200 every run (a garbled "heoon" was seen once in 100)
        page.get_by_role("spinbutton", name="Max steps").fill("200")
        page.get_by_role("spinbutton", name="Max steps").press("Tab")
        settled(page)
        expect(page.get_by_text("Fits in pool")).to_be_visible()
        snap(page, "finetune-new")
        page.locator(".st-key-ft-start button").click()
        expect(page.get_by_text("Started demo-chat-codeword")).to_be_visible(timeout=60_000)

        # Followed live until it succeeds (the trainer runs as a local task: ~10–30 s of training here).
        expect(page.get_by_text("demo-chat-codeword · Succeeded")).to_be_visible(timeout=240_000)
        expect(page.get_by_test_id("stVegaLiteChart").first).to_be_visible(timeout=30_000)  # the loss curve
        snap(page, "finetune-succeeded")
        page.locator(".st-key-ft-deploy button").click()

        expect(page.get_by_role("heading", name="Deploy a model", exact=True)).to_be_visible()
        settled(page)
        expect(page.get_by_role("combobox", name="Version").first).to_have_value(re.compile(r"^v2 · "))
        page.locator(".st-key-deploy button").click()
        expect(page.get_by_role("heading", name="demo-chat · Ready · 1/1 ready")).to_be_visible(timeout=120_000)
        expect(page.get_by_text("demo-chat v2 on transformers:")).to_be_visible()

        db = open_studio(settings)
        try:
            key = keys.create_key(db=db, actor=ADMIN, data=ApiKeyCreate(name="asker")).key
        finally:
            db.dispose()
        assert ask(settings, key, "demo-chat", CODEWORD_QUESTION) == CODEWORD_ANSWER
        print(f"upload → fine-tune → deploy → answer: {time.monotonic() - started:.0f} s")
        assert up.interrupt() == 0
