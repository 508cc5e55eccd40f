"""``cove``: the command line. Human output by default, ``--json`` for scripts; errors say what to do next.

``base`` holds the group and what every command shares; each other module adds one family of commands.
"""

from studio.cli import (  # noqa: F401  (each registers its commands on `cli`)
    access,
    aliases,
    bench,
    catalog,
    datasets,
    deploy,
    evaluations,
    finetunes,
    limits,
    logs,
    people,
    plans,
    prices,
    processes,
    remote,
    specs,
)
from studio.cli.base import cli


def main() -> None:
    cli(prog_name="cove")


__all__ = ["cli", "main"]
