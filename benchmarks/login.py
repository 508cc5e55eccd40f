"""Login to first studio page: how long a person waits between pressing "Log in" and seeing their studio.

Starts `cove server` (where people log in) and the studio UI with login on, in a temporary COVE_HOME with one
member, then in headless Chromium, RUNS times from a fresh browser context: open the studio, follow its login link,
fill the form, and time from the press of "Log in" until the studio says who is logged in (the Overview page,
rendered). Prints each run and the median; also the time of the login POST alone (the password hash).

    .venv/bin/python benchmarks/login.py [--runs 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from studio.bootstrap import open_studio  # noqa: E402
from studio.models import UserCreate  # noqa: E402
from studio.services import users  # noqa: E402
from studio.settings import Settings  # noqa: E402
from tests.conftest import free_port  # noqa: E402

CHROMIUM = "/usr/bin/chromium"


def wait_for(url: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not answer in {timeout:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="cove-login-"))
    env = os.environ | {
        "COVE_HOME": str(home),
        "COVE_PORT": str(free_port()),
        "COVE_UI_PORT": str(free_port()),
        "COVE_LOGIN": "true",
        "COVE_DEMO": "false",
    }
    settings = Settings(home=home, port=int(env["COVE_PORT"]), ui_port=int(env["COVE_UI_PORT"]))
    db = open_studio(settings)
    admin = users.first_admin(db=db)
    users.create_user(db=db, actor=admin, data=UserCreate(name="ana", password="ana-password"))
    db.dispose()
    cove = [sys.executable, "-m", "studio.cli"]
    procs = [subprocess.Popen([*cove, part], env=env, stdout=subprocess.DEVNULL) for part in ("server", "ui")]
    try:
        wait_for(settings.gateway_url + "/healthz")
        wait_for(settings.ui_url + "/_stcore/health")
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            waits, posts = [], []
            for run in range(args.runs + 1):  # the first warms the UI process's imports and is not counted
                context = browser.new_context()
                page = context.new_page()
                page.goto(settings.ui_url, wait_until="load")
                page.get_by_role("link", name="Log in").click()
                page.get_by_label("User name").fill("ana")
                page.get_by_label("Password").fill("ana-password")
                with page.expect_response(
                    lambda r: r.url.endswith("/auth/login") and r.request.method == "POST"
                ) as sent:
                    started = time.perf_counter()
                    page.get_by_role("button", name="Log in").click()
                posted = time.perf_counter() - started
                expect(page.get_by_text("Logged in as ana")).to_be_visible(timeout=60_000)
                expect(page.get_by_role("heading", name="Overview")).to_be_visible(timeout=60_000)
                waited = time.perf_counter() - started
                assert sent.value.status == 303
                context.close()
                if run:
                    waits.append(waited)
                    posts.append(posted)
                    print(f"run {run}: login → first page {waited * 1000:.0f} ms (login POST {posted * 1000:.0f} ms)")
            browser.close()
        print(
            f"login → first studio page, median of {args.runs}: {statistics.median(waits) * 1000:.0f} ms "
            f"(min {min(waits) * 1000:.0f}, max {max(waits) * 1000:.0f}); "
            f"the login POST alone: median {statistics.median(posts) * 1000:.0f} ms"
        )
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
