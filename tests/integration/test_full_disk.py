"""A full disk: clear errors, no empty secret, nothing corrupted, and the reconcile pass goes on.

Two ways to fill a disk: a real 64 KiB tmpfs filled to its last byte (ENOSPC; mounting needs root: another user's
test runs again in a child pytest, as root of a user namespace of its own, where unprivileged user namespaces exist;
skipped where neither works), and, anywhere, a file-size limit (RLIMIT_FSIZE) in a child process, under which a
write fails with EFBIG at the same point a full disk fails it with ENOSPC.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from studio.backends.base import TaskState
from studio.db import Database
from studio.errors import CoveError
from studio.jobs import JobRunner
from studio.sealing import kept_secret
from studio.settings import Settings
from studio.values import JobStatus
from tests.fakes.backends import InstantBackend
from tests.fakes.processes import HealthyProcess
from tests.integration.test_finetunes import add_dataset, create, job
from tests.unit.test_backends_local import backend_with, workload

IN_NAMESPACE = "COVE_TEST_IN_USER_NAMESPACE"  # set for the child pytest that runs a test in a user namespace


@dataclass
class Disk:
    path: Path
    mounted: bool = True  # False: this user may not mount it; ``on_a_full_disk`` runs the test where it may

    def fill(self) -> None:
        with (self.path / "filler").open("ab", buffering=0) as fh, contextlib.suppress(OSError):
            while True:
                fh.write(b"x" * 1024)

    def free(self) -> None:
        (self.path / "filler").unlink()


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Disk]:
    """A 64 KiB tmpfs of the test's own, where this user may mount one (root, or root of a user namespace); else a
    disk not mounted, for ``on_a_full_disk`` to run the test where it may be; skipped where neither works."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        refused = done.stderr.decode().strip()
        if os.environ.get(IN_NAMESPACE):
            pytest.fail(f"cannot mount a tmpfs even as root of a user namespace: {refused}")
        probe = subprocess.run(
            ["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True, text=True, check=False
        )
        if probe.returncode != 0:
            pytest.skip(
                f"cannot mount a tmpfs here ({refused}), nor in a user namespace of this user's "
                f"(unshare: {probe.stderr.strip()}): run as root, or where unprivileged user namespaces are allowed"
            )
        yield Disk(mount, mounted=False)
        return
    try:
        yield Disk(mount)
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def on_a_full_disk(test: Callable[..., None]) -> Callable[..., None]:
    """Run ``test`` here when its ``disk`` is mounted; else run it again in a child pytest as root of a user and
    mount namespace of its own (``unshare --user --map-root-user --mount``), where it mounts the tmpfs itself, and
    pass or fail with the child."""

    @functools.wraps(test)
    def run(*args: object, **kwargs: object) -> None:
        disk = kwargs["disk"]
        assert isinstance(disk, Disk)
        if disk.mounted:
            test(*args, **kwargs)
            return
        node = os.environ["PYTEST_CURRENT_TEST"].rsplit(" ", 1)[0]
        basetemp = disk.path.parent / "in-namespace"  # this user's: the child's root owns it there
        command = [sys.executable, "-m", "pytest", node, "-q", "-p", "no:cacheprovider", f"--basetemp={basetemp}"]
        done = subprocess.run(
            ["unshare", "--user", "--map-root-user", "--mount", *command],
            capture_output=True,
            text=True,
            env={**os.environ, IN_NAMESPACE: "1"},
            cwd=Path(__file__).resolve().parents[2],
            timeout=300,
        )
        if done.returncode != 0 or " passed" not in done.stdout:
            pytest.fail(f"in a user namespace, {node} did not pass:\n{done.stdout}{done.stderr}")

    return run


@on_a_full_disk
def test_no_secret_is_kept_on_a_full_disk_and_one_kept_before_is_intact(disk: Disk) -> None:
    before = kept_secret(disk.path / "hub_token")
    disk.fill()

    with pytest.raises(CoveError) as raised:
        kept_secret(disk.path / "secret_key")

    assert raised.value.message == f"cannot keep a secret at {disk.path / 'secret_key'}: No space left on device"
    assert sorted(p.name for p in disk.path.iterdir()) == ["filler", "hub_token"]  # no empty key, no temp file
    assert kept_secret(disk.path / "hub_token") == before
    disk.free()
    assert len(kept_secret(disk.path / "secret_key")) == 64


@on_a_full_disk
def test_a_replica_whose_log_cannot_be_written_fails_its_start_and_the_pass_goes_on(disk: Disk) -> None:
    backend, runtimes, clock = backend_with(disk.path, HealthyProcess)
    spec = workload()
    disk.fill()

    (replica,) = backend.apply(spec).replicas  # no exception: the pass goes on

    assert replica.phase == "backoff"
    assert replica.message.startswith("cannot write its log ")
    assert replica.message.endswith(": No space left on device")
    assert runtimes.started == []
    disk.free()
    clock.advance(1)
    backend.apply(spec)
    assert len(runtimes.started) == 1


class TalkativeBackend(InstantBackend):
    """Its tasks print a long log."""

    def task_logs(self, name: str, *, tail: int = 100) -> list[str]:
        return [f"step {i}: loss 1.{i:04d}" for i in range(min(tail, 5000))]


@on_a_full_disk
def test_a_fine_tune_log_that_cannot_be_kept_is_counted_and_the_job_still_ends(
    disk: Disk, db: Database, settings: Settings, stub_model: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The fine-tunes' folder on a full disk: the ended attempt's log cannot be written; the job ends as it would
    have (failed, saying why), its task is forgotten, and the lost log is logged and counted, not raised."""
    settings.finetunes_dir.parent.mkdir(parents=True, exist_ok=True)
    settings.finetunes_dir.symlink_to(disk.path)
    add_dataset(db, settings)
    create(db)
    backend = TalkativeBackend()
    runner = JobRunner(db=db, settings=settings, python="python3")
    runner.reconcile({"default": backend})  # launched: its plan is on the disk
    (task,) = backend.tasks()
    backend.task_states[task] = TaskState("failed", "the process exited with code 3", 3)
    disk.fill()

    with caplog.at_level(logging.ERROR, logger="studio.jobs"):
        runner.reconcile({"default": backend})  # no exception: the pass goes on

    assert job(db).status == JobStatus.FAILED
    assert job(db).message.startswith("the process exited with code 3")
    assert backend.tasks() == set()
    assert runner.logs_not_kept == 1
    assert "the log of attempt 1 cannot be kept" in caplog.text
    assert caplog.text.rstrip().endswith("No space left on device")
    assert not list(disk.path.glob("tune/*.log"))  # no partial log


LIMITED = """
import resource, signal, sys
from pathlib import Path
from studio.errors import CoveError
from studio.sealing import kept_secret
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, (16, 16))
try:
    kept_secret(Path(sys.argv[1]))
except CoveError as exc:
    sys.exit(exc.message)
"""


def test_a_secret_whose_write_fails_leaves_nothing_behind(tmp_path: Path) -> None:
    """Anywhere, without root: a file-size limit makes the secret's write fail part way (EFBIG)."""
    path = tmp_path / "secret_key"

    done = subprocess.run([sys.executable, "-c", LIMITED, str(path)], capture_output=True, text=True, timeout=60)

    assert done.returncode == 1
    assert done.stderr.strip() == f"cannot keep a secret at {path}: File too large"
    assert list(tmp_path.iterdir()) == []  # neither an empty key nor a temporary file


@pytest.mark.parametrize("text", ["", "\n", "abc123"])
def test_an_empty_or_short_secret_file_is_refused_not_used(tmp_path: Path, text: str) -> None:
    path = tmp_path / "secret_key"
    path.write_text(text)

    with pytest.raises(CoveError) as raised:
        kept_secret(path)

    assert raised.value.message == (
        f"the secret at {path} is {'too short' if text.strip() else 'empty'}, so it is not used"
    )
    assert "remove it to make a new one" in raised.value.hint
    assert path.read_text() == text  # left for the operator to look at
