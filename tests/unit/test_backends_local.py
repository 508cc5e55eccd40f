"""The local backend: its pure helpers (restart backoff, reading the end of a log file) and its supervision of
replicas (restarts, the start timeout, GPU assignment) with a fake clock and processes played in memory."""

from __future__ import annotations

import dataclasses
import itertools
import signal
from pathlib import Path

import pytest

from studio.backends.base import WorkloadSpec
from studio.backends.environment import child_env
from studio.backends.local import LocalBackend, backoff_s, tail_lines
from studio.controller import derive_status
from studio.machine import Gpu
from studio.values import Resources, RuntimeKind, Status
from tests.conftest import make_settings
from tests.fakes.processes import CrashingProcess, FakeClock, FakeProcess, HealthyProcess, NeverReadyProcess, Runtimes


@pytest.mark.parametrize(
    ("failures", "delay"), [(0, 1.0), (1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0), (7, 60.0), (50, 60.0)]
)
def test_backoff_doubles_from_one_second_and_stops_at_a_minute(failures: int, delay: float) -> None:
    assert backoff_s(failures) == delay


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, str):
        path.write_text(text)
    else:
        path.write_bytes(text)
    return path


@pytest.mark.parametrize(
    ("text", "n", "lines"),
    [
        ("a\nb\nc\nd\n", 2, ["c", "d"]),
        ("a\nb\nc\nd", 2, ["c", "d"]),  # no final newline
        ("a\nb\n", 10, ["a", "b"]),  # fewer lines than asked
        ("only\n", 1, ["only"]),
        ("", 5, []),
        ("a\n\nb\n", 3, ["a", "", "b"]),  # blank lines are lines
    ],
)
def test_tail_lines_gives_the_last_n_lines(tmp_path: Path, text: str, n: int, lines: list[str]) -> None:
    assert tail_lines(write(tmp_path / "replica-0.log", text), n) == lines


def test_a_missing_log_has_no_lines(tmp_path: Path) -> None:
    assert tail_lines(tmp_path / "never-written.log", 20) == []


def test_the_tail_of_a_file_much_larger_than_one_read_block(tmp_path: Path) -> None:
    path = write(tmp_path / "big.log", "".join(f"line {i:05d} {'x' * 40}\n" for i in range(5000)))
    assert path.stat().st_size > 8 * 8192

    assert tail_lines(path, 3) == [f"line {i:05d} {'x' * 40}" for i in (4997, 4998, 4999)]


def test_last_lines_longer_than_one_read_block_come_back_whole(tmp_path: Path) -> None:
    long = ["a" * 10000, "b" * 20000, "c" * 9000]
    path = write(tmp_path / "long.log", "short\n" * 100 + "\n".join(long) + "\n")

    assert tail_lines(path, 3) == long
    assert tail_lines(path, 4) == ["short", *long]


def test_bytes_that_are_not_utf8_are_replaced_not_raised(tmp_path: Path) -> None:
    path = write(tmp_path / "bin.log", b"ok\nbad \xff\xfe here\n")

    assert tail_lines(path, 2) == ["ok", "bad \ufffd\ufffd here"]


def test_asking_for_zero_lines_gives_none(tmp_path: Path) -> None:
    assert tail_lines(write(tmp_path / "replica-0.log", "a\nb\n"), 0) == []


# ------------------------------------------------------------------------------------------------ supervision
# The backend itself, driven pass by pass (``apply``, as the controller calls it) with a fake clock and processes
# played in memory (tests/fakes/processes.py): nothing is started, and minutes of backoff take no time.

GPUS = tuple(Gpu(i, "NVIDIA L4", 23034) for i in range(4))


def workload(name: str = "chat", replicas: int = 1, **resources: int) -> WorkloadSpec:
    return WorkloadSpec(
        name=name,
        runtime=RuntimeKind.CUSTOM,
        model="/models/stub",
        model_revision=None,
        image=f"example.com/{name}:1",
        local_command=("fake-runtime", "--port", "{port}"),
        resources=Resources(cpu=1, memory_mib=256, **resources),
        replicas=replicas,
    )


def backend_with(
    tmp_path: Path, kind: type[FakeProcess], *, gpus: tuple[Gpu, ...] = (), **settings: object
) -> tuple[LocalBackend, Runtimes, FakeClock]:
    clock = FakeClock()
    runtimes = Runtimes(kind, clock)
    backend = LocalBackend(
        make_settings(tmp_path / "cove", **settings),
        clock=clock,
        gpus=gpus,
        spawn=runtimes.spawn,
        probe=runtimes.probe,
    )
    return backend, runtimes, clock


def test_a_crashing_replica_is_started_again_after_1_2_4_8_s(tmp_path: Path) -> None:
    backend, runtimes, clock = backend_with(tmp_path, CrashingProcess)
    spec = workload()
    backend.apply(spec)  # started
    for failures, delay in enumerate([1.0, 2.0, 4.0, 8.0], start=1):
        (replica,) = backend.apply(spec).replicas  # the exit is seen; the next start waits
        assert (replica.phase, replica.failures, replica.restarts) == ("backoff", failures, failures)
        clock.advance(delay - 0.25)
        backend.apply(spec)
        assert len(runtimes.started) == failures  # not yet
        clock.advance(0.25)
        backend.apply(spec)
        assert len(runtimes.started) == failures + 1
    assert [b.started_at - a.started_at for a, b in itertools.pairwise(runtimes.started)] == [1.0, 2.0, 4.0, 8.0]


def test_a_replica_that_crashes_failure_threshold_times_fails_with_its_last_log_lines(tmp_path: Path) -> None:
    backend, _, clock = backend_with(tmp_path, CrashingProcess, failure_threshold=3)
    spec = workload()
    backend.apply(spec)
    for failures, delay in ((1, 1.0), (2, 2.0)):
        status = backend.apply(spec)
        assert status.replicas[0].failures == failures
        assert derive_status(replicas=1, workload=status, failure_threshold=3).status == Status.STARTING
        clock.advance(delay)
        backend.apply(spec)

    status = backend.apply(spec)  # the third exit in a row
    (replica,) = status.replicas
    assert (replica.failures, replica.message) == (3, "replica 0 exited with code 1")
    assert replica.log_tail == CrashingProcess.says_at_start  # its own words, from its last start only
    failed = derive_status(replicas=1, workload=status, failure_threshold=3)
    assert failed.status == Status.FAILED
    assert failed.message == (
        "replica 0 exited with code 1; 3 failed starts in a row, retrying with backoff\nlast log lines:\n"
        "loading model weights …\ntorch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 GiB (simulated)"
    )


def test_a_replica_never_ready_is_killed_after_the_start_timeout_and_started_again(tmp_path: Path) -> None:
    backend, runtimes, clock = backend_with(tmp_path, NeverReadyProcess, runtime_start_timeout_s=30)
    spec = workload()
    backend.apply(spec)
    (first,) = runtimes.started
    clock.advance(30)
    (replica,) = backend.apply(spec).replicas
    assert (replica.phase, replica.failures) == ("starting", 0)  # 30 s of loading is allowed
    assert not first.waited
    clock.advance(0.25)
    (replica,) = backend.apply(spec).replicas
    assert first.waited  # reaped after the kill (which goes to its process group: see tests/integration)
    assert (replica.phase, replica.failures) == ("backoff", 1)
    assert replica.message == "replica 0 was not ready after 30 s and was killed"
    clock.advance(1)
    backend.apply(spec)
    assert len(runtimes.started) == 2
    assert runtimes.started[1].started_at == first.started_at + 31.25


def test_a_ready_replica_is_not_killed_by_the_start_timeout(tmp_path: Path) -> None:
    backend, runtimes, clock = backend_with(tmp_path, HealthyProcess, runtime_start_timeout_s=30)
    spec = workload()
    backend.apply(spec)
    (replica,) = backend.apply(spec).replicas
    assert replica.phase == "ready"
    assert replica.endpoint == f"http://127.0.0.1:{runtimes.started[0].port}"
    clock.advance(3600)
    assert backend.apply(spec).replicas[0].phase == "ready"
    assert len(runtimes.started) == 1


def test_whole_gpus_go_to_free_devices_and_a_replica_waits_when_none_is_free(tmp_path: Path) -> None:
    backend, runtimes, clock = backend_with(tmp_path, HealthyProcess, gpus=GPUS)
    pair, singles, late = workload("pair", gpus=2), workload("singles", replicas=2, gpus=1), workload("late", gpus=1)
    backend.apply(pair)
    backend.apply(singles)
    assert [p.gpus for p in runtimes.started] == ["0,1", "2", "3"]

    (waiting,) = backend.apply(late).replicas
    assert (waiting.phase, waiting.failures) == ("pending", 0)  # waiting is not failing
    assert waiting.message == "waiting for a free GPU on this machine"
    assert len(runtimes.started) == 3

    stopped = dataclasses.replace(pair, replicas=0)
    backend.apply(stopped)  # asked to stop ...
    runtimes.started[0].exit(-signal.SIGTERM)  # ... it does, and its GPUs are free
    assert backend.apply(stopped).replicas == ()
    clock.advance(1)  # the waiting replica asks again every second
    (started,) = backend.apply(late).replicas
    assert started.phase == "starting"
    assert runtimes.started[-1].gpus == "0"


def test_memory_slices_gather_on_the_fullest_gpu_with_room_and_whole_gpus_go_where_no_slice_is(tmp_path: Path) -> None:
    backend, runtimes, _ = backend_with(tmp_path, HealthyProcess, gpus=GPUS)  # 4 × 23034 MiB
    backend.apply(workload("small", replicas=2, gpu_memory_mib=4096))
    backend.apply(workload("tiny", gpu_memory_mib=2048))
    backend.apply(workload("big", gpus=2))
    backend.apply(workload("wide", gpu_memory_mib=16384))
    assert [p.gpus for p in runtimes.started] == [
        "0",  # small/0
        "0",  # small/1, beside small/0: the fullest GPU that takes it
        "0",  # tiny/0
        "1,2",  # big/0: whole GPUs, where no slice is
        "3",  # wide/0: GPU 0 has 12794 MiB left, too little
    ]

    (waiting,) = backend.apply(workload("wider", gpu_memory_mib=16384)).replicas
    assert waiting.message == "waiting for a free GPU on this machine"  # 12794 and 6650 MiB left: no GPU has room
    assert len(runtimes.started) == 5
    # each replica's status says where it is, so admission keeps it there (``Observed.placed``)
    assert [r.gpus for r in backend.apply(workload("small", replicas=2, gpu_memory_mib=4096)).replicas] == [(0,), (0,)]
    assert [r.gpus for r in backend.apply(workload("big", gpus=2)).replicas] == [(1, 2)]
    assert waiting.gpus == ()


def test_a_memory_slice_never_lands_on_a_gpu_a_whole_gpu_replica_holds(tmp_path: Path) -> None:
    backend, runtimes, _ = backend_with(tmp_path, HealthyProcess, gpus=GPUS[:2])
    backend.apply(workload("big", gpus=1))
    backend.apply(workload("small", replicas=2, gpu_memory_mib=4096))
    assert [p.gpus for p in runtimes.started] == ["0", "1", "1"]  # both slices beside each other, not on big's GPU

    backend.apply(workload("bigger", gpus=1))
    (waiting,) = backend.apply(workload("bigger", gpus=1)).replicas
    assert waiting.message == "waiting for a free GPU on this machine"  # GPU 1 holds slices: not whole any more
    assert len(runtimes.started) == 3


def test_a_replica_s_environment_is_an_allowlist_of_cove_s_then_the_runtime_s() -> None:
    parent = {
        "PATH": "/usr/bin",
        "HOME": "/home/cove",
        "LC_ALL": "C.UTF-8",
        "HF_HOME": "/cache",
        "HF_TOKEN": "hf_secret",
        "CUDA_HOME": "/usr/local/cuda",
        "COVE_DATABASE_URL": "postgresql://cove:pw@db/cove",
        "COVE_SECRET_KEY": "key",
        "AWS_SECRET_ACCESS_KEY": "aws",
        "HF_HUB_OFFLINE": "0",
    }

    assert child_env(parent, {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2"}) == {
        "PATH": "/usr/bin",
        "HOME": "/home/cove",
        "LC_ALL": "C.UTF-8",
        "HF_HOME": "/cache",
        "CUDA_HOME": "/usr/local/cuda",
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "2",
    }


def test_hung_replicas_are_probed_at_once_and_fail_their_probe_after_the_timeout(tmp_path: Path) -> None:
    """Three deployments' replicas stop answering (their probes never return): one ``observe`` waits one probe
    timeout, not three, and each replica's probe counts as failed until it is taken out of rotation."""
    import threading
    import time

    backend, runtimes, _ = backend_with(tmp_path, HealthyProcess, runtime_probe_timeout_s=0.2)
    specs = [workload(name) for name in ("a", "b", "c")]
    for spec in specs:
        backend.apply(spec)
        backend.apply(spec)
    assert all(backend.apply(s).ready for s in specs)
    hang = threading.Event()
    backend.probe = lambda host, port, path: "" if hang.wait(30) else "unreachable"
    try:
        for _ in range(3):
            began = time.monotonic()
            backend.observe()
            assert time.monotonic() - began < 1.5  # one timeout (0.2 s) and its margin, not 3 × 0.2 s per replica
            statuses = [backend.apply(s) for s in specs]
        assert [s.ready for s in statuses] == [(), (), ()]
        assert all("no answer within 0.2 s" in s.replicas[0].message for s in statuses)
    finally:
        hang.set()
    backend.close(stop_workloads=False)
    assert len(runtimes.started) == 3
