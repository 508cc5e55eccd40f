"""A leader-election lock the test gives and takes away (``studio.leadership.Lock``), for tests of what the elector
and the controller do as leadership comes and goes, without a database or a cluster."""

from __future__ import annotations


class GivenLock:
    """Free while ``free`` is True (this process may hold it); taken by "b" otherwise. Counts its releases."""

    def __init__(self) -> None:
        self.free, self.released = True, 0

    def acquire(self) -> bool:
        return self.free

    def renew(self) -> bool:
        return self.free

    def holder(self) -> str:
        return "" if self.free else "b"

    def release(self) -> None:
        self.released += 1
