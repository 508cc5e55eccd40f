"""``python -m studio.cli …`` is ``cove …`` (how `cove up` starts its parts)."""

from studio.cli import main

main()
