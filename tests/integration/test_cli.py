"""The `cove` command line as users meet it: `cove up` from first start to Ctrl-C, and the messages and exit codes
of everyday commands (run in-process with click's runner, against a real SQLite database)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import openai
import psutil
import pytest
from click.testing import CliRunner, Result

from studio.bootstrap import open_studio
from studio.cli import cli
from studio.demo import PAIRS
from studio.modelstore import inspect_folder
from studio.services import models, users
from studio.settings import Settings
from tests.integration.conftest import (
    CoveUp,
    answers,
    cove_env,
    register_demo,
    runtime_pids,
    wait_until,
    write_stub_model,
)
from tests.people import ADMIN

SERVICES = ("server", "ui", "playground", "hub")  # the parts of `cove up`, each with COVE_HOME/logs/<part>.log
HUB_LINE = re.compile(r"^\[[DIWEC] |/hub/health", re.MULTILINE)  # JupyterHub's and its proxy's own log lines


def run(settings: Settings, *args: str) -> Result:
    env = {k: v for k, v in cove_env(settings).items() if k.startswith(("COVE_", "HF_"))}
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


# ------------------------------------------------------------------------------------------------ cove up


@pytest.mark.runtime
@pytest.mark.hub
def test_up_serves_the_demo_and_ctrl_c_stops_everything(settings: Settings, demo_folder: Path) -> None:
    db = open_studio(settings)  # the demo model is already built, as after a first start; up registers the rest
    register_demo(db, settings, demo_folder)
    db.dispose()
    with CoveUp(settings, COVE_DEMO="true") as up:
        key = re.search(r"demo API key\s+(\S+)", up.wait_for("demo API key")).group(1)  # type: ignore[union-attr]
        assert "deployed demo-chat as 'demo'" in up.output
        assert "demo: Ready" in up.output
        with openai.OpenAI(base_url=settings.gateway_url + "/v1", api_key=key, max_retries=0) as client:
            reply = client.chat.completions.create(
                model="demo", temperature=0, messages=[{"role": "user", "content": "Hello"}]
            )
        assert reply.choices[0].message.content == dict(PAIRS)["Hello"]
        # the first start gives the first admin a password, shown once (and in the banner)
        password = re.search(r"log in as\s+admin / (\S+)", up.output).group(1)  # type: ignore[union-attr]
        assert f"first start: log in as 'admin' with password {password} (shown this once)" in up.output
        db = open_studio(settings)
        assert users.authenticate(db=db, name="admin", password=password).name == "admin"
        db.dispose()
        assert f"studio                       {settings.ui_url}" in up.output
        assert f"playground                   {settings.playground_url}" in up.output
        api = re.search(r"API \(cove.Client, CLI\)\s+(\S+)", up.output).group(1)  # type: ignore[union-attr]
        assert api == f"{settings.gateway_url}/api/v1"
        assert answers(api + "/openapi.json")  # the API answers where the banner says
        assert answers(settings.ui_url + "/_stcore/health")  # the studio UI and the playground run too
        assert answers(settings.playground_url + "/")
        assert answers(settings.hub_url + "/hub/health")
        assert up.proc is not None
        children = psutil.Process(up.proc.pid).children(recursive=True)
        assert len(children) >= 5  # server, UI, playground, hub (and its proxy), the demo's model server
        assert up.interrupt() == 0  # Ctrl-C
    assert "stopped" in up.lines[-1]
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]  # no orphans
    assert runtime_pids(settings.home) == set()
    # the terminal shows Cove's own lines; each part's output is in its log, after a header for this start
    assert f"logs                         {settings.logs_dir} (cove logs server|ui|playground|hub)" in up.output
    assert not HUB_LINE.search(up.output), up.output
    assert "Application startup complete" not in up.output  # the server's uvicorn
    assert "You can now view your Streamlit app" not in up.output
    logs = {service: (settings.logs_dir / f"{service}.log").read_text() for service in SERVICES}
    for service, text in logs.items():
        assert re.match(rf"--- cove \S+: cove up starting {service}\n", text), text[:200]
    assert "Running JupyterHub version" in logs["hub"]
    assert "Application startup complete" in logs["server"]
    assert "You can now view your Streamlit app" in logs["ui"]
    assert f"playground on {settings.playground_url}" in logs["playground"]


@pytest.mark.runtime
@pytest.mark.hub
def test_up_verbose_shows_each_part_output_and_still_logs_it(settings: Settings) -> None:
    with CoveUp(settings, "--verbose", "--no-demo") as up:
        up.wait_for("Running JupyterHub version")  # the hub's own line, on the terminal
        up.wait_for("Ctrl-C stops everything")
        assert up.interrupt() == 0
    assert HUB_LINE.search(up.output)
    assert "You can now view your Streamlit app" in up.output
    assert "Running JupyterHub version" in (settings.logs_dir / "hub.log").read_text()


@pytest.mark.runtime
@pytest.mark.hub
def test_up_says_which_part_exited_with_its_last_log_lines(settings: Settings, tmp_path: Path) -> None:
    config = tmp_path / "broken_hub_config.py"
    config.write_text('raise RuntimeError("this hub configuration is broken on purpose")\n')
    with CoveUp(settings, "--no-demo", COVE_HUB_EXTRA_CONFIG=str(config)) as up:
        assert up.proc is not None
        assert up.proc.wait(timeout=180) == 1
    log = settings.logs_dir / "hub.log"
    assert re.search(rf"notebook hub exited with code \d+; the last lines of {re.escape(str(log))}:", up.output)
    assert "RuntimeError: this hub configuration is broken on purpose" in up.output
    assert "Cove is running" not in up.output
    assert up.lines[-2:] == ["stopping Cove …\n", "stopped\n"]


@pytest.mark.parametrize(
    ("port", "variable"),
    [
        ("port", "COVE_PORT"),
        ("ui_port", "COVE_UI_PORT"),
        ("playground_port", "COVE_PLAYGROUND_PORT"),
        ("hub_port", "COVE_HUB_PORT"),
    ],
)
@pytest.mark.runtime
def test_up_refuses_a_taken_port_before_doing_anything(settings: Settings, port: str, variable: str) -> None:
    number = getattr(settings, port)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", number))
        taken.listen()
        done = subprocess.run(
            [sys.executable, "-m", "studio.cli", "up"],
            env=cove_env(settings) | {"COVE_DEMO": "true"},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    assert f"error: port {number} on 127.0.0.1 is in use by another program" in done.stderr
    assert f"next: stop that program, or choose another port with {variable}" in done.stderr
    assert not (settings.home / "demo.json").exists()  # nothing was built or deployed


def test_server_refuses_a_taken_port(settings: Settings) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", settings.port))
        taken.listen()
        result = run(settings, "server")
    assert result.exit_code == 1
    assert f"port {settings.port} on 127.0.0.1 is in use" in result.output


# ------------------------------------------------------------------------------------------------ cove logs


def test_logs_prints_the_last_lines_of_a_part_log(settings: Settings) -> None:
    settings.logs_dir.mkdir(parents=True)
    (settings.logs_dir / "hub.log").write_text("".join(f"line {i}\n" for i in range(150)))
    default = run(settings, "logs", "hub")
    assert default.exit_code == 0
    assert default.output.splitlines() == [f"line {i}" for i in range(50, 150)]  # 100 by default
    assert run(settings, "logs", "hub", "--tail", "2").output == "line 148\nline 149\n"


def test_logs_of_a_part_that_never_ran_say_how_to_start_it(settings: Settings) -> None:
    result = run(settings, "logs", "ui")
    assert result.exit_code == 1
    assert f"error: ui has not run under {settings.home} yet: there is no {settings.logs_dir / 'ui.log'}" in (
        result.output
    )
    assert "next: start Cove with `cove up`" in result.output
    assert run(settings, "logs", "gateway").exit_code == 2  # not a part: click names the choices


@pytest.mark.runtime
def test_logs_follow_prints_lines_as_they_are_written_across_rotation_and_truncation(settings: Settings) -> None:
    log = settings.logs_dir / "server.log"
    log.parent.mkdir(parents=True)
    log.write_text("old\nbefore\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "studio.cli", "logs", "server", "--follow", "--tail", "1"],
        env=cove_env(settings) | {"PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        wait_until(lambda: "before\n" in lines, timeout=30, what="the last line")
        with log.open("a") as fh:
            fh.write("appended\n")
        wait_until(lambda: "appended\n" in lines, timeout=30, what="the appended line")
        log.replace(log.with_suffix(".log.1"))  # rotated, as `cove up` does
        log.write_text("after rotation\n")
        wait_until(lambda: "after rotation\n" in lines, timeout=30, what="the new file's line")
        log.write_text("cut\n")  # truncated
        wait_until(lambda: "cut\n" in lines, timeout=30, what="the line after truncation")
        assert proc.poll() is None  # still following
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        reader.join(timeout=10)
        proc.stdout.close()
    assert lines == ["before\n", "appended\n", "after rotation\n", "cut\n"]


# ------------------------------------------------------------------------------------------------ everyday commands


def test_models_and_deployments_human_and_json(settings: Settings, tmp_path: Path) -> None:
    folder = write_stub_model(tmp_path / "tiny")
    added = run(settings, "model", "add", "tiny", str(folder))
    assert added.exit_code == 0
    assert added.output.startswith("model tiny v1: LlamaForCausalLM, ")
    listed = json.loads(run(settings, "model", "list", "--json").output)
    assert [(m["name"], m["versions"][0]["source_kind"]) for m in listed] == [("tiny", "local")]
    created = run(settings, "deploy", "create", "chat", "--model", "tiny:1", "--cpu", "0.5", "--", "--dtype", "float32")
    assert created.exit_code == 0, created.output
    assert "deployment chat: tiny v1 on transformers:0.1.0, 1 replica(s) in pool local" in created.output
    (dep,) = json.loads(run(settings, "deploy", "list", "--json").output)
    assert (dep["name"], dep["status"], dep["runtime_args"]) == ("chat", "Pending", ["--dtype", "float32"])
    described = run(settings, "deploy", "get", "chat")
    assert "chat: Pending, 0/1 ready" in described.output
    assert "Created" in described.output
    table = run(settings, "deploy", "list").output.splitlines()
    assert table[0].split() == ["NAME", "OWNER", "STATUS", "READY", "MODEL", "IMAGE", "POOL", "MESSAGE"]
    assert table[1].split()[:4] == ["chat", "admin", "Pending", "0/1"]


def test_adding_a_hub_model_shows_its_progress_as_it_comes(settings: Settings, tmp_path: Path) -> None:
    db = open_studio(settings)
    folder = write_stub_model(tmp_path / "tiny")
    models.register_built(
        actor=ADMIN, db=db, name="tiny", folder=folder, repo_id="org/tiny", cache_dir=settings.models_dir
    )
    db.dispose()

    added = run(settings, "model", "add", "again", "hf:org/tiny")  # from the local cache (offline)

    assert added.exit_code == 0, added.output
    lines = added.output.splitlines()
    assert lines[0] == "resolving org/tiny (Hugging Face Hub or local cache)"  # streamed by the API as it came
    assert lines[-1].startswith("model again v1: LlamaForCausalLM, ")
    as_json = run(settings, "model", "add", "third", "hf:org/tiny", "--json")
    assert json.loads(as_json.output)["name"] == "third"  # nothing but the JSON: no progress lines


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["deploy", "create", "Bad_Name", "--model", "x"], 2, "name: 'Bad_Name' is not a valid name: use lowercase"),
        (["deploy", "create", "ok", "--model", "nope"], 1, "error: no model named 'nope'\n  next: add it with"),
        (["deploy", "create", "ok", "--model", "x:v2"], 1, "the version after ':' must be a number"),
        (["deploy", "create", "ok", "--model", "x", "--replicas", "-1"], 2, "replicas: Input should be greater than"),
        (["deploy", "scale", "ghost", "2"], 1, "error: no deployment named 'ghost'\n  next: see `cove deploy list`"),
        (["model", "add", "m", "hf:nobody/nothing"], 1, "is not in the local model cache"),
        (["key", "revoke", "nope"], 1, "error: no API key named 'nope'"),
        (["image", "add", "rt", "latest", "example.com/rt"], 2, "'latest' is not a version"),
    ],
)
def test_mistakes_get_a_message_and_a_next_step(settings: Settings, args: list[str], code: int, message: str) -> None:
    result = run(settings, *args)
    assert result.exit_code == code
    assert message in result.output


def test_corrupt_model_folder_is_explained(settings: Settings, tmp_path: Path) -> None:
    folder = write_stub_model(tmp_path / "broken")
    (folder / "config.json").write_text("{")
    result = run(settings, "model", "add", "broken", str(folder))
    assert result.exit_code == 1
    assert "config.json is not valid JSON" in result.output
    assert "next: repair or re-download the model" in result.output


def test_keys_are_printed_once(settings: Settings) -> None:
    created = run(settings, "key", "create", "ci", "--json")
    secret = json.loads(created.output)["key"]
    listed = run(settings, "key", "list").output
    assert secret[:12] in listed
    assert secret not in listed
    assert "active" in listed
    assert run(settings, "key", "revoke", "ci").output == "API key ci revoked\n"
    assert "revoked" in run(settings, "key", "list").output


def test_users_are_added_listed_changed_and_removed_and_members_act_as_themselves(settings: Settings) -> None:
    added = json.loads(run(settings, "user", "add", "ana", "--groups", "nlp", "--json").output)
    assert (added["name"], added["role"], added["groups"]) == ("ana", "member", ["nlp"])
    assert len(added["password"]) >= 16  # generated, shown this once
    assert run(settings, "user", "add", "bo", "--password", "bo-secret-1").output == "user bo added as member\n"
    listed = run(settings, "user", "list").output
    assert re.search(r"^ana\s+member\s+nlp\s+active\s+never$", listed, re.MULTILINE), listed
    assert re.search(r"^admin\s+admin\s+-\s+no password\s+never$", listed, re.MULTILINE), listed

    run(settings, "--as", "ana", "key", "create", "ana-app", "--expires", "30d")
    run(settings, "--as", "bo", "key", "create", "bo-app")
    assert "ana-app" not in run(settings, "--as", "bo", "key", "list").output  # bo sees his own
    assert "ana-app" in run(settings, "key", "list").output  # the admin sees everyone's
    refused = run(settings, "--as", "bo", "key", "revoke", "ana-app")
    assert refused.exit_code == 1
    assert "error: API key 'ana-app' is not yours: owned by ana" in refused.output
    assert "active until" in run(settings, "--as", "ana", "key", "list").output
    member_adds = run(settings, "--as", "bo", "user", "add", "eve")
    assert (member_adds.exit_code, "error: only an admin may add users" in member_adds.output) == (1, True)
    assert run(settings, "--as", "nobody", "key", "list").exit_code == 1  # an unknown user acts as no one

    assert "disabled" in run(settings, "user", "set", "bo", "--disable").output
    assert run(settings, "--as", "bo", "key", "list").exit_code == 1
    assert "their keys are revoked" in run(settings, "user", "remove", "bo").output

    trail = json.loads(run(settings, "audit", "--json").output)
    assert [(e["actor"], e["kind"], e["name"], e["reason"]) for e in trail[:3]] == [
        ("admin", "user", "bo", "Removed"),
        ("admin", "user", "bo", "Changed"),
        ("bo", "key", "bo-app", "Created"),
    ]
    mine = json.loads(run(settings, "--as", "ana", "audit", "--json").output)
    assert [(e["name"], e["reason"]) for e in mine] == [("ana-app", "Created")]


@pytest.mark.parametrize(
    ("when", "message"),
    [("soon", "--expires 'soon' is neither a duration nor a date"), ("0d", "--expires '0d' is neither")],
)
def test_a_key_expiry_must_be_a_duration_or_a_date(settings: Settings, when: str, message: str) -> None:
    result = run(settings, "key", "create", "k", "--expires", when)
    assert result.exit_code == 1
    assert message in result.output


def test_bad_settings_are_named(settings: Settings) -> None:
    env = {k: v for k, v in cove_env(settings).items() if k.startswith("COVE_")} | {"COVE_PORT": "eighty"}
    result = CliRunner().invoke(cli, ["deploy", "list"], env=env)
    assert result.exit_code == 1
    assert "bad COVE_* setting: port: Input should be a valid integer" in result.output


@pytest.mark.torch
def test_demo_model_command_builds_a_loadable_folder(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["demo-model", str(tmp_path / "demo"), "--steps", "3"])
    assert result.exit_code == 0, result.output
    info = inspect_folder(tmp_path / "demo")
    assert (info.architecture, info.model_type) == ("LlamaForCausalLM", "llama")
    assert "demo model written to" in result.output


@pytest.mark.runtime
def test_cove_console_script_is_installed() -> None:
    script = Path(sys.executable).with_name("cove")
    assert script.exists()
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, env=os.environ, timeout=60)
    assert done.returncode == 0
    for command in ("up", "server", "model", "deploy", "key", "usage", "demo-model"):
        assert f"  {command}" in done.stdout


# ------------------------------------------------------------------------------------------------ clusters, builds


KUBECONFIG = """apiVersion: v1
kind: Config
current-context: east
clusters: [{name: east, cluster: {server: 'https://east.example.com:6443'}}]
contexts: [{name: east, context: {cluster: east, user: ops}}]
users: [{name: ops, user: {token: secret-token}}]
"""


def test_clusters_are_registered_listed_and_removed(settings: Settings, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "east.yaml"
    kubeconfig.write_text(KUBECONFIG)
    added = run(settings, "cluster", "add", "east", "--kubeconfig", str(kubeconfig), "--namespace", "team")
    assert added.output == "cluster east: https://east.example.com:6443 (context east, namespace team)\n"
    listed = run(settings, "cluster", "list").output.splitlines()
    assert listed[0].split() == ["NAME", "SERVER", "CONTEXT", "NAMESPACE", "STATE"]
    assert listed[1].split()[:4] == ["east", "https://east.example.com:6443", "east", "team"]
    assert listed[1].endswith("not checked yet")
    assert "secret-token" not in run(settings, "cluster", "list", "--json").output
    assert run(settings, "pool", "list").output.splitlines()[0].split()[:2] == ["NAME", "CLUSTER"]

    wrong = run(settings, "cluster", "add", "lab", "--kubeconfig", str(kubeconfig), "--context", "prod")
    assert wrong.exit_code == 1
    assert "the kubeconfig has no context named 'prod'\n  next: choose one of its contexts: east" in wrong.output
    assert run(settings, "cluster", "remove", "east").output == "cluster east removed\n"
    assert run(settings, "cluster", "list", "--json").output.strip() == "[]"


def test_an_image_from_a_dockerfile_is_queued_for_building_in_the_registry(settings: Settings, tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM docker.io/vllm/vllm-openai:v0.11.0\nRUN pip install flash-attn==2.8.3\n")
    env = {k: v for k, v in cove_env(settings).items() if k.startswith("COVE_")}
    without = CliRunner().invoke(cli, ["image", "add", "srv", "1.0", "--dockerfile", str(dockerfile)], env=env)
    assert without.exit_code == 1
    assert "no reference to push it to" in without.output
    assert "COVE_REGISTRY" in without.output

    env["COVE_REGISTRY"] = "registry.example.com/ml"
    added = CliRunner().invoke(cli, ["image", "add", "srv", "1.0", "--dockerfile", str(dockerfile)], env=env)
    assert added.output == "image srv registry.example.com/ml/srv:1.0 registered; it will be built by the controller\n"
    row = next(line for line in run(settings, "image", "list").output.splitlines() if line.startswith("srv "))
    assert row.endswith("Pending: waiting for the controller to start the build")
    again = run(settings, "image", "rebuild", "srv", "1.0")
    assert again.exit_code == 1
    assert "image srv:1.0 is being built" in again.output
