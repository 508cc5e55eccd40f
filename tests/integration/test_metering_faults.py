"""Faults the gateway meets, on real processes: ``kill -9`` mid-stream and mid-flush (every request billed once),
a database outage (chats go on from cached keys, liveness up, readiness degraded, nothing lost), floods of unknown
keys and slow clients (real chats still answered). The model server is the scripted fake: the model is not the point.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest
import sqlalchemy as sa

from studio.bootstrap import open_studio
from studio.db import Database
from studio.models import ApiKeyCreate, ModelCreate
from studio.services import keys, models, usage
from studio.settings import Settings
from tests.conftest import free_port, make_settings
from tests.fakes import FAKES
from tests.fakes.severable_link import SeverableLink
from tests.integration.conftest import add_fake_image, deploy, wait_until, write_stub_model
from tests.integration.test_gateway import play_ready
from tests.people import ADMIN

# How long the database is away in the outage test: a minute, as an operator's failover or restart may take
# (COVE_TEST_OUTAGE_S shortens it for a quick run).
OUTAGE_S = float(os.environ.get("COVE_TEST_OUTAGE_S", "60"))

pytestmark = pytest.mark.runtime
CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}


class GatewayProcess:
    """``python -m studio.gateway`` in a process of its own, which a test may kill."""

    def __init__(self, settings: Settings, database_url: str, **env: str) -> None:
        self.url = f"http://127.0.0.1:{settings.port}"
        settings.home.mkdir(parents=True, exist_ok=True)
        self.log = settings.home / "gateway.log"
        environment = {
            **os.environ,
            "COVE_HOME": str(settings.home),
            "COVE_PORT": str(settings.port),
            "COVE_HOST": "127.0.0.1",
            "COVE_DATABASE_URL": database_url,
            "COVE_ROUTES_REFRESH_S": "0.2",
            "COVE_USAGE_FLUSH_S": "0.2",
            "COVE_LOGIN": "false",
            "COVE_DEMO": "false",
            **env,
        }
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "studio.gateway"], env=environment, stdout=out, stderr=subprocess.STDOUT
            )
        wait_until(self._live, timeout=30, what="the gateway to answer /livez")

    def _live(self) -> bool:
        try:
            return httpx.get(self.url + "/livez", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def ready(self) -> dict[str, object]:
        return httpx.get(self.url + "/readyz", timeout=5).json()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


@contextlib.contextmanager
def running(settings: Settings, database_url: str, **env: str) -> Iterator[GatewayProcess]:
    """A gateway process for the block (``env``: its COVE_ settings), stopped after it, killed or not."""
    gateway = GatewayProcess(settings, database_url, **env)
    try:
        yield gateway
    finally:
        gateway.stop()


@dataclass
class Studio:
    """A studio whose deployment 'chat' is Ready at a runtime, a key for it, and the home its gateways run in."""

    db: Database
    key: str
    database_url: str
    home: Settings

    def gateway(self, **env: str) -> contextlib.AbstractContextManager[GatewayProcess]:
        return running(self.home, self.database_url, **env)


@contextlib.contextmanager
def serving(database_url: str, tmp_path: Path, runtime: str) -> Iterator[Studio]:
    db = open_studio(make_settings(tmp_path / "studio", database_url=database_url))
    try:
        yield Studio(db, _serve_chat(db, tmp_path, runtime), database_url, make_settings(tmp_path / "home"))
    finally:
        db.dispose()


@contextlib.contextmanager
def _runtime_process(*command: str) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, *command, "--port", str(port)])
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(url + "/health"), timeout=20, what="the fake runtime")
        yield url
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def runtime() -> Iterator[str]:
    with _runtime_process(str(FAKES / "scripted_runtime.py")) as url:
        yield url


@pytest.fixture
def studio(database_url: str, tmp_path: Path, runtime: str) -> Iterator[Studio]:
    with serving(database_url, tmp_path, runtime) as served:
        yield served


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _serve_chat(db: Database, tmp_path: Path, runtime: str) -> str:
    """A deployment 'chat' Ready at ``runtime`` and a key for it."""
    models.add_model(
        actor=ADMIN,
        db=db,
        data=ModelCreate(name="stub", source=str(write_stub_model(tmp_path / "stub"))),
        cache_dir=tmp_path / "cache",
    )
    deploy(db, "chat", "stub", add_fake_image(db, "scripted_runtime.py"))
    play_ready(db, "chat", [runtime])
    return keys.create_key(actor=ADMIN, db=db, data=ApiKeyCreate(name="app")).key


def _rows(db: Database) -> dict[str, tuple[int, int, int]]:
    """request id → (status, prompt tokens, completion tokens) of every usage row."""
    records = usage.usage_records(db=db, deployment="chat")
    with db.engine.connect() as conn:
        ids = dict(conn.execute(sa.text("SELECT id, request_id FROM usage_records")).all())
    return {ids[r.id]: (r.status_code, r.prompt_tokens, r.completion_tokens) for r in records}


def _chat(url: str, key: str, *, stream: bool = False) -> str:
    reply = httpx.post(
        url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        json={**CHAT, "stream": stream},
        timeout=30,
    )
    assert reply.status_code == 200, reply.text
    return reply.headers["x-request-id"]


def test_kill_9_mid_stream_and_mid_flush_bills_every_request_once(studio: Studio, tmp_path: Path) -> None:
    db, key, settings = studio.db, studio.key, studio.home
    # flushes far apart: everything served is still only in the spool when the process is killed
    with studio.gateway(COVE_USAGE_FLUSH_S="3600") as first:
        served = [_chat(first.url, key, stream=i % 2 == 1) for i in range(6)]
        stalled = []
        for _ in range(2):  # streams open at the kill: the runtime sent one word and waits
            client = httpx.Client(timeout=30)
            request = client.build_request(
                "POST",
                first.url + "/v1/chat/completions",
                headers={"authorization": f"Bearer {key}"},
                json={**CHAT, "stream": True, "messages": [{"role": "user", "content": "stall"}]},
            )
            response = client.send(request, stream=True)
            next(response.iter_raw())  # the first word arrived
            stalled.append(response.headers["x-request-id"])
        assert _rows(db) == {}
        first.kill()
    spool = settings.home / "spool"
    left = tmp_path / "left-by-the-crash"
    shutil.copytree(spool, left)  # to play a crash after the rows were committed and before the files were deleted

    with studio.gateway():
        rows = wait_until(lambda: len(r := _rows(db)) == 8 and r, timeout=30, what="eight usage rows")
    assert {rid: rows[rid] for rid in served} == dict.fromkeys(served, (200, 7, 3))
    assert all(rows[rid][0] == 499 and rows[rid][1] > 0 and rows[rid][2] == 0 for rid in stalled)

    shutil.copytree(left, spool, dirs_exist_ok=True)
    with studio.gateway() as third:
        replayed = [spool / p.name for p in left.iterdir()]
        wait_until(lambda: not any(p.exists() for p in replayed), timeout=30, what="the replayed spool to be deleted")
        assert _rows(db) == rows  # replayed again: nothing counted twice
        served.append(_chat(third.url, key))
        wait_until(lambda: len(_rows(db)) == 9, timeout=30, what="the new request's row")


MOCK_UPSTREAM = Path(__file__).resolve().parents[2] / "benchmarks" / "mock_upstream.py"


def _checkpointed(spool: Path, request_id: str) -> int:
    """The completion tokens of the newest checkpoint of ``request_id`` in ``spool`` (0 when none yet)."""
    reached = 0
    for path in sorted(spool.glob("*.jsonl")):
        for line in path.read_bytes().splitlines():
            with contextlib.suppress(orjson.JSONDecodeError):  # a line being written
                record = orjson.loads(line)
                if record.get("k") == "at" and record["request_id"] == request_id:
                    reached = max(reached, record["completion_tokens"])
    return reached


def _content_chunks(lines: Iterator[str]) -> Iterator[int]:
    """Yields 1 per content chunk of an SSE chat stream, as the client reads them."""
    for line in lines:
        if line.startswith("data: {") and orjson.loads(line[6:])["choices"][0]["delta"].get("content"):
            yield 1


def test_a_stream_open_at_kill_9_is_billed_what_its_client_had_received(database_url: str, tmp_path: Path) -> None:
    # a runtime streaming a long answer (a token every 10 ms, for a minute)
    with (
        _runtime_process(str(MOCK_UPSTREAM), "--chunks", "6000", "--delay-ms", "10") as runtime,
        serving(database_url, tmp_path, runtime) as studio,
    ):
        spool = studio.home.home / "spool"
        with (
            studio.gateway(COVE_USAGE_FLUSH_S="3600", COVE_USAGE_CHECKPOINT_S="0.2") as gateway,
            httpx.Client(timeout=30) as client,
            client.stream(
                "POST",
                gateway.url + "/v1/chat/completions",
                headers={"authorization": f"Bearer {studio.key}"},
                json={**CHAT, "stream": True},
            ) as response,
        ):
            request_id = response.headers["x-request-id"]
            chunks = _content_chunks(response.iter_lines())
            counted = sum(itertools.islice(chunks, 30))
            # a checkpoint has covered what the client counted (the stream goes on meanwhile)
            wait_until(lambda: _checkpointed(spool, request_id) >= counted, timeout=10, what="a checkpoint")
            checkpointed = _checkpointed(spool, request_id)
            gateway.kill()
            with contextlib.suppress(httpx.HTTPError):  # what was on its way when the gateway died, to the cut
                for one in chunks:
                    counted += one
            received = counted
        assert _rows(studio.db) == {}
        with studio.gateway():
            rows = wait_until(lambda: _rows(studio.db), timeout=30, what="the killed stream's row")
    status, prompt, completion = rows[request_id]
    assert list(rows) == [request_id]
    assert status == 499
    assert prompt > 0
    # billed at its last checkpoint: at least the one seen before the kill (which covered the 30 chunks the client
    # had counted then), at most what the client received in all
    assert 30 <= checkpointed <= completion <= received


def test_database_outage_chats_go_on_readiness_degraded_and_nothing_is_lost(
    postgres: str, tmp_path: Path, runtime: str
) -> None:
    from tests.conftest import new_postgres_database

    url = new_postgres_database(postgres)
    host, port = url.rsplit("@", 1)[1].split("/", 1)[0].split(":")
    link = SeverableLink((host, int(port)))
    through_link = url.replace(f"{host}:{port}", f"127.0.0.1:{link.port}")
    settings = make_settings(tmp_path / "home")
    with contextlib.ExitStack() as undo:
        undo.callback(link.sever)  # after the gateway stopped
        gateway = undo.enter_context(running(settings, through_link, COVE_DB_CONNECT_TIMEOUT_S="1"))  # migrates it
        wait_until(lambda: gateway.ready()["status"] == "ok", timeout=60, what="the gateway to be ready")
        db = open_studio(make_settings(tmp_path / "studio", database_url=url))
        key = _serve_chat(db, tmp_path, runtime)
        sent = [_chat(gateway.url, key)]  # the key is read and cached
        link.sever()  # the database goes away for OUTAGE_S
        severed_at = time.monotonic()
        wait_until(lambda: gateway.ready()["status"] == "degraded", timeout=30, what="readiness to say degraded")
        held = threading.Event()  # never set: its wait paces the client's chats through the outage
        while time.monotonic() - severed_at < OUTAGE_S:
            sent.append(_chat(gateway.url, key, stream=len(sent) % 2 == 0))
            assert httpx.get(gateway.url + "/livez").status_code == 200
            ready = httpx.get(gateway.url + "/readyz")
            assert ready.status_code == 200
            assert ready.json()["status"] == "degraded"
            held.wait(0.2)
        assert len(sent) > OUTAGE_S  # chats went on from the first seconds of the outage to its last
        link.restore()
        wait_until(lambda: gateway.ready()["status"] == "ok", timeout=30, what="readiness to recover")
        rows = wait_until(lambda: len(r := _rows(db)) == len(sent) and r, timeout=30, what="every chat's row")
        assert set(rows) == set(sent)
        db.dispose()


def test_start_with_the_database_down_retries_and_says_so(tmp_path: Path) -> None:
    dead_port = free_port()
    settings = make_settings(tmp_path / "home")
    database_url = f"postgresql+psycopg://postgres@127.0.0.1:{dead_port}/cove"
    with running(settings, database_url, COVE_DB_CONNECT_TIMEOUT_S="1") as gateway:
        ready = httpx.get(gateway.url + "/readyz")
        assert ready.status_code == 503
        assert ready.json()["status"] == "starting"
        assert "does not answer" in ready.json()["problem"]
        refused = httpx.post(gateway.url + "/v1/chat/completions", json=CHAT)
        assert refused.status_code == 503
        assert refused.headers["retry-after"]
        wait_until(lambda: "attempt 3" in gateway.ready()["problem"], timeout=30, what="a third attempt")
        assert gateway.proc.poll() is None  # still running: no crash loop


def test_unknown_keys_are_refused_from_memory_while_a_real_client_chats(studio: Studio) -> None:
    db, key = studio.db, studio.key
    with studio.gateway(COVE_AUTH_FAILURES_PER_MINUTE="1000000") as gateway:
        with httpx.Client(base_url=gateway.url, headers={"authorization": f"Bearer {key}"}) as client:

            def latency(n: int) -> float:
                times = []
                for _ in range(n):
                    began = time.perf_counter()
                    assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
                    times.append(time.perf_counter() - began)
                return statistics.median(times)

            idle = latency(30)
            stop = threading.Event()
            refused = []

            def flood() -> None:
                with httpx.Client(base_url=gateway.url) as attacker:
                    while not stop.is_set():
                        bad = {"authorization": f"Bearer sk-{os.urandom(16).hex()}"}
                        refused.append(attacker.post("/v1/chat/completions", json=CHAT, headers=bad).status_code)

            floods = [threading.Thread(target=flood) for _ in range(8)]
            for thread in floods:
                thread.start()
            try:
                loaded = latency(30)
            finally:
                stop.set()
                for thread in floods:
                    thread.join()
        assert set(refused) == {401}
        assert len(refused) > 20
        assert loaded < 2 * idle + 0.005, (idle, loaded)  # the 5 ms is for this 2-core machine's scheduling noise
        # a key made a moment ago works at once
        fresh = keys.create_key(actor=ADMIN, db=db, data=ApiKeyCreate(name="fresh")).key
        _chat(gateway.url, fresh)


def _clear_of_the_minute(span_s: float) -> None:
    """Wait until ``span_s`` fit in what is left of the gateway's current minute, whose unknown keys per address it
    counts (``time.monotonic() // 60``, the clock every process on the machine shares): a test's refusals then fall
    in one minute's count."""
    wait_until(lambda: 60 - time.monotonic() % 60 > span_s, timeout=span_s + 1, what="a fresh stretch of the minute")


def test_too_many_unknown_keys_from_one_address_get_429_and_good_keys_still_work(studio: Studio) -> None:
    key = studio.key
    with studio.gateway(COVE_AUTH_FAILURES_PER_MINUTE="5") as gateway:
        _clear_of_the_minute(10)  # 5 refusals held 0.25-0.5 s, 2 held 1-2 s
        bad = {"authorization": "Bearer sk-nope"}
        codes = [httpx.post(gateway.url + "/v1/chat/completions", json=CHAT, headers=bad).status_code for _ in range(7)]
        assert codes == [401] * 5 + [429] * 2
        _chat(gateway.url, key)


def test_slow_and_huge_bodies_are_cut_off_while_real_chats_are_answered(studio: Studio) -> None:
    key = studio.key
    with studio.gateway(COVE_BODY_TIMEOUT_S="2", COVE_MAX_BODY_BYTES="100000") as gateway:
        port = int(gateway.url.rsplit(":", 1)[1])
        slow = []
        for _ in range(200):  # clients that send their headers, then a body one byte at a time (or never)
            conn = socket.create_connection(("127.0.0.1", port))
            conn.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                + f"authorization: Bearer {key}\r\ncontent-length: 1000\r\n\r\n{{".encode()
            )
            slow.append(conn)
        began = time.perf_counter()
        _chat(gateway.url, key)
        assert time.perf_counter() - began < 1.0
        huge = httpx.post(
            gateway.url + "/v1/chat/completions", headers={"authorization": f"Bearer {key}"}, content=b"x" * 200_000
        )
        assert huge.status_code == 413
        slow[0].settimeout(10)
        assert slow[0].recv(100).startswith(b"HTTP/1.1 408")  # cut off after the body deadline
        for conn in slow:
            conn.close()


def test_connections_that_send_no_request_are_cut_off_and_free_their_place(studio: Studio) -> None:
    key = studio.key
    with studio.gateway(COVE_MAX_CONNECTIONS="20", COVE_HEADER_TIMEOUT_S="1") as gateway:
        port = int(gateway.url.rsplit(":", 1)[1])
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]  # the whole cap: silent...
        for conn in held[10:]:  # ...or a request line whose headers never end
            conn.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")

        def answered() -> bool:
            reply = httpx.post(
                gateway.url + "/v1/chat/completions", headers={"authorization": f"Bearer {key}"}, json=CHAT
            )
            return reply.status_code == 200

        wait_until(answered, timeout=15, what="a real chat answered once the silent connections were cut off")
        for conn in (held[0], held[-1]):
            conn.settimeout(10)
            answer = b""
            while chunk := conn.recv(4096):  # to the end: the gateway closed the connection
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 408")
            assert b"headers did not arrive within 1 s" in answer
        for conn in held:
            conn.close()


def test_an_address_past_the_unknown_key_limit_gets_429_no_sooner_than_a_key_check(studio: Studio) -> None:
    # a 429 at once would let a flood of unknown keys send as fast as the gateway can answer, starving real requests
    key = studio.key
    with studio.gateway(COVE_AUTH_FAILURES_PER_MINUTE="1", COVE_KEYS_RECHECK_S="1") as gateway:
        with httpx.Client(base_url=gateway.url, headers={"authorization": "Bearer sk-nope"}, timeout=15) as flood:
            _clear_of_the_minute(25)  # a refusal held 1-2 s, then two 4-8 s
            assert flood.post("/v1/chat/completions", json=CHAT).status_code == 401
            for _ in range(2):
                began = time.perf_counter()
                assert flood.post("/v1/chat/completions", json=CHAT).status_code == 429
                assert time.perf_counter() - began >= 1.0
        _chat(gateway.url, key)
