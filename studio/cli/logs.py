"""`cove logs`: what the parts of `cove up` wrote, from their logs in COVE_HOME/logs."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import click

from studio.cli.base import cli, settings_of

# The parts `cove up` runs, named by the `cove` commands that run them; each writes COVE_HOME/logs/<name>.log.
SERVICES = ("server", "ui", "playground", "hub")
POLL_S = 0.25


def split_lines(pending: bytes, chunk: bytes) -> tuple[list[str], bytes]:
    """The complete lines in ``pending + chunk`` (without their line ends), and the unfinished rest."""
    *done, rest = (pending + chunk).split(b"\n")
    return [line.decode("utf-8", "replace").removesuffix("\r") for line in done], rest


def _open(path: Path) -> IO[bytes] | None:
    try:
        return path.open("rb")
    except FileNotFoundError:  # moved away and not made again yet
        return None


def follow(path: Path, offset: int, *, sleep: Callable[[float], None] = time.sleep) -> Iterator[str]:
    """The lines written to ``path`` from byte ``offset`` on, polling every POLL_S, forever.

    A log moved away (rotated) is read to its end, then the new file at ``path`` from its start; a log cut shorter
    than what was read (truncated) is read again from its start.
    """
    handle, pending = _open(path), b""
    if handle is not None:
        handle.seek(offset)
    try:
        while True:
            chunk = handle.read(65536) if handle is not None else b""
            if chunk:
                lines, pending = split_lines(pending, chunk)
                yield from lines
                continue
            try:
                now: os.stat_result | None = path.stat()
            except FileNotFoundError:
                now = None
            if handle is None or (now is not None and not os.path.samestat(now, os.fstat(handle.fileno()))):
                if handle is not None:  # rotated: what was written to the old file is read above, to its end
                    handle.close()
                    if pending:
                        yield pending.decode("utf-8", "replace")
                    pending = b""
                handle = _open(path)
                if handle is None:
                    sleep(POLL_S)
            elif now is not None and now.st_size < handle.tell():
                handle.seek(0)
                pending = b""
            else:
                sleep(POLL_S)
    finally:
        if handle is not None:
            handle.close()


@cli.command("logs")
@click.argument("service", type=click.Choice(SERVICES))
@click.option("--tail", default=100, show_default=True, help="How many of the last lines to print.")
@click.option("--follow", "-f", "keep_following", is_flag=True, help="Keep printing new lines until Ctrl-C.")
@click.pass_context
def logs(ctx: click.Context, service: str, tail: int, keep_following: bool) -> None:
    """The output of a part of `cove up` (SERVICE is its command): its last lines in COVE_HOME/logs/SERVICE.log."""
    from studio.up import service_log, service_log_tail

    settings = settings_of(ctx)
    path = service_log(settings, service)
    offset = path.stat().st_size if path.is_file() else 0  # before the tail: a line written meanwhile is not lost
    for line in service_log_tail(settings, service, tail):
        click.echo(line)
    if keep_following:
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how following ends, not a failure
            for line in follow(path, offset):
                click.echo(line)
