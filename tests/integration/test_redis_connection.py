"""The counters' lean Redis connection (studio/gateway/resp.py) against a real redis-server: passwords, users and
databases from the URL as redis-py reads them, many commands pipelined on one connection, scripts loaded again
after the server lost them, and a connection that went away replaced by the next command."""

from __future__ import annotations

import asyncio
import socket

import pytest

from studio.errors import InvalidSpec
from studio.gateway.counters import RedisCounters, StoreUnavailable
from studio.gateway.resp import Connection, ReplyError, pack
from studio.limits import LimitScope, Rule
from tests.conftest import RedisServer


def _command(server: RedisServer, *args: str) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=2) as sock:
        sock.sendall(pack(args))
        return sock.recv(256)


def test_many_commands_share_one_connection_and_get_their_own_replies(redis_server: RedisServer) -> None:
    async def scenario() -> list[object]:
        redis = Connection(redis_server.url)
        try:
            return await asyncio.gather(*(redis.call("INCRBY", "n", i) for i in range(1, 201)))
        finally:
            await redis.close()

    replies = asyncio.run(scenario())
    assert replies == [i * (i + 1) // 2 for i in range(1, 201)]  # in order: each its own running sum


def test_a_password_a_user_and_a_database_come_from_the_url(redis_server: RedisServer) -> None:
    assert _command(redis_server, "ACL", "SETUSER", "cove", "on", ">p@ss w", "~*", "+@all").startswith(b"+OK")
    assert _command(redis_server, "CONFIG", "SET", "requirepass", "s3cret").startswith(b"+OK")
    base = f"127.0.0.1:{redis_server.port}"

    async def scenario() -> tuple[object, object, str]:
        as_default = Connection(f"redis://:s3cret@{base}/3")
        as_user = Connection(f"redis://cove:p%40ss%20w@{base}/3")  # quoted, as in any URL
        wrong = Connection(f"redis://:nope@{base}/0")
        try:
            await as_default.call("SET", "k", "in three")
            read = await as_user.call("GET", "k")
            other = await as_user.call("SELECT", 0), await as_user.call("EXISTS", "k")
            with pytest.raises(ReplyError) as refused:
                await wrong.call("PING")
            return read, other, str(refused.value)
        finally:
            for redis in (as_default, as_user, wrong):
                await redis.close()

    read, other, refused = asyncio.run(scenario())
    assert read == b"in three"
    assert RedisCounters(f"redis://:s3cret@{base}/3").url == f"redis://{base}/3"  # as errors and logs name it
    assert other == (b"OK", 0)  # database 0 does not hold what was written in 3
    assert "WRONGPASS" in refused


def test_a_script_the_server_lost_is_loaded_again(redis_server: RedisServer) -> None:
    rule = Rule(LimitScope.KEY, "app", rpm=2)

    async def scenario() -> list[bool]:
        store = RedisCounters(redis_server.url)
        try:
            first, _ = await store.reserve((rule,), 1, "a")
            assert _command(redis_server, "SCRIPT", "FLUSH").startswith(b"+OK")
            second, _ = await store.reserve((rule,), 1, "b")
            third, _ = await store.reserve((rule,), 1, "c")
            return [first.admitted, second.admitted, third.admitted]
        finally:
            await store.close()

    assert asyncio.run(scenario()) == [True, True, False]  # the limit still counted across the reload


def test_a_lost_connection_fails_its_command_and_the_next_one_reconnects(redis_server: RedisServer) -> None:
    rule = Rule(LimitScope.KEY, "app", rpm=100)

    async def scenario() -> tuple[str, bool]:
        store = RedisCounters(redis_server.url, backoff_s=0)
        try:
            assert await store.reachable()
            redis_server.stop()
            with pytest.raises(StoreUnavailable) as down:
                await store.reserve((rule,), 1, "a")
            assert not await store.reachable()
            redis_server.start()
            verdict, _ = await store.reserve((rule,), 1, "b")
            return str(down.value), verdict.admitted
        finally:
            await store.close()

    message, admitted = asyncio.run(scenario())
    assert "failed to reserve" in message
    assert admitted


def test_a_command_past_its_deadline_drops_the_connection_so_no_late_reply_answers_another(
    redis_server: RedisServer,
) -> None:
    async def scenario() -> object:
        redis = Connection(redis_server.url)
        try:
            await redis.call("SET", "k", "v")
            blocked = asyncio.ensure_future(redis.call("BLPOP", "never", 0.5))  # answers nil after 0.5 s
            await asyncio.sleep(0)  # sent
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.05):
                    await blocked
            return await redis.call("GET", "k")  # on a new connection: not the BLPOP's late nil
        finally:
            await redis.close()

    assert asyncio.run(scenario()) == b"v"


def test_a_url_that_is_not_redis_or_names_an_option_cove_does_not_read_is_refused_at_once() -> None:
    with pytest.raises(InvalidSpec, match="redis://") as refused:
        Connection("http://:s3cret@redis:6379")
    assert "s3cret" not in str(refused.value)  # a URL may hold a password: it is not quoted back
    with pytest.raises(InvalidSpec, match="numbers"):
        Connection("redis://redis:6379/zero")
    with pytest.raises(InvalidSpec, match="ssl_cert_reqs"):  # never ignored: TLS would be checked where it says not
        Connection("rediss://redis:6379/0?ssl_cert_reqs=none")
    assert Connection("rediss://redis:6379/0?ssl_ca_certs=/etc/cove/ca.pem").ca_file == "/etc/cove/ca.pem"
