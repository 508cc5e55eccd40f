"""The deploy journey in a real browser: headless Chromium (the distribution's, driven by Playwright) clicks through
the studio that `cove up` serves, deploys the demo model from the Deploy page, waits for it to be Ready, then chats
with it in the playground and reads the streamed reply. Screenshots of every page are kept in test-artifacts/."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from studio.bootstrap import open_studio
from studio.demo import PAIRS
from studio.models import ApiKeyCreate
from studio.services import keys, models, usage
from studio.settings import Settings
from tests.integration.conftest import CoveUp, wait_until
from tests.people import ADMIN

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
    """Wait until Streamlit has finished the run: no "running" indicator and no element still a placeholder."""
    expect(page.get_by_test_id("stStatusWidget")).to_have_count(0)
    expect(page.get_by_test_id("stSkeleton")).to_have_count(0)


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
    models.register_built(
        actor=ADMIN,
        db=db,
        name="demo-chat",
        folder=demo_folder,
        repo_id="cove/demo-chat",
        cache_dir=settings.models_dir,
    )
    secret = keys.create_key(actor=ADMIN, db=db, data=ApiKeyCreate(name="playground")).key
    db.dispose()
    page = browser_page

    with CoveUp(settings, COVE_DEMO="false", COVE_PLAYGROUND_API_KEY=secret) as up:
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
        expect(page.locator("#model input")).to_have_value("demo-chat", timeout=30_000)
        page.locator("#temperature input[type=number]").fill("0")  # greedy: the demo's trained answer, exactly
        page.locator("#temperature input[type=number]").press("Enter")
        page.locator("#prompt textarea").fill("Hello")
        page.locator("#send").click()
        expect(page.locator("#chatbot")).to_contain_text(dict(PAIRS)["Hello"], timeout=60_000)
        expect(page.locator("#stats")).to_contain_text("tokens/s")
        snap(page, "playground")

        # The reply was metered: the key's usage shows on the keys page, the traffic on the deployment's.
        db = open_studio(settings)
        try:
            wait_until(lambda: usage.usage_records(db=db, deployment="demo-chat"), what="the chat's usage record")
        finally:
            db.dispose()
        open_studio_page(page, ui, "keys", "API keys & usage")
        expect(page.get_by_test_id("stVegaLiteChart")).to_have_count(1)
        snap(page, "keys-after-chat")
        open_studio_page(page, ui, "deployments", "Deployments")
        page.get_by_role("tab", name="Traffic").click()
        expect(page.get_by_test_id("stVegaLiteChart").first).to_be_visible()
        snap(page, "deployments-traffic")

        assert up.interrupt() == 0
