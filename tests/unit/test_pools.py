"""Admission: whether a request fits a pool, and when it does not, a reason that names what is needed, what is
free and who holds it."""

from __future__ import annotations

import pytest

from studio.pools import Admission, Claim, Free, admit, first_fit, free_of
from studio.values import PoolBase, Resources, Sharing

LOCAL = PoolBase(name="local", cpu_cores=8, memory_mib=16384)
WHOLE = PoolBase(name="gpu", sharing=Sharing.WHOLE, cpu_cores=32, memory_mib=131072, gpu_count=2, gpu_memory_mib=81920)
HAMI = PoolBase(
    name="shared",
    sharing=Sharing.HAMI,
    cpu_cores=16,
    memory_mib=65536,
    gpu_count=2,
    gpu_memory_mib=16384,
    slice_mib=1024,
)


def cpu(cores: float, memory_mib: int = 1024) -> Resources:
    return Resources(cpu=cores, memory_mib=memory_mib)


def gpus(n: int) -> Resources:
    return Resources(cpu=1, memory_mib=1024, gpus=n)


def gpu_slice(mib: int) -> Resources:
    return Resources(cpu=1, memory_mib=1024, gpu_memory_mib=mib)


# ------------------------------------------------------------------------------------------------ CPU and memory


def test_a_request_that_fits_is_admitted_with_what_is_free_and_who_holds_it() -> None:
    held = [Claim("chat", cpu(2, 4096), replicas=2)]

    got = admit(LOCAL, held, Claim("embed", cpu(2, 4096)))

    assert got == Admission(True, Free(cpu=4.0, memory_mib=8192, gpus=0), holders=("chat",))


def test_too_much_cpu_names_the_need_the_free_cores_and_the_holders() -> None:
    held = [Claim("chat", cpu(3), replicas=2), Claim("embed", cpu(1))]

    got = admit(LOCAL, held, Claim("new", cpu(1), replicas=2))

    assert got == Admission(
        False,
        Free(cpu=1.0, memory_mib=13312, gpus=0),
        "needs 2 CPU cores (2 × 1) but pool 'local' has 1 free (held by chat, embed): "
        "ask for less CPU or fewer replicas, or free some",
        ("chat", "embed"),
    )


def test_too_much_cpu_in_an_empty_pool_names_no_holders() -> None:
    got = admit(PoolBase(name="small", cpu_cores=2, memory_mib=4096), [], Claim("new", cpu(2.5)))

    assert got.reason == (
        "needs 2.5 CPU cores (1 × 2.5) but pool 'small' has 2 free: ask for less CPU or fewer replicas, or free some"
    )
    assert got.fits is False


def test_memory_exactly_free_fits_and_one_more_replica_does_not() -> None:
    held = [Claim("chat", cpu(1, 8192))]

    assert admit(LOCAL, held, Claim("new", cpu(1, 4096), replicas=2)).fits is True
    got = admit(LOCAL, held, Claim("new", cpu(1, 4096), replicas=3))

    assert got == Admission(
        False,
        Free(cpu=7.0, memory_mib=8192, gpus=0),
        "needs 12288 MiB memory (3 × 4096) but pool 'local' has 8192 MiB free (held by chat)",
        ("chat",),
    )


def test_cpu_quota_caps_what_is_free_below_the_pool_size() -> None:
    pool = PoolBase(name="team", cpu_cores=64, memory_mib=262144, quota_cpu=4)

    got = admit(pool, [Claim("chat", cpu(3))], Claim("new", cpu(2)))

    assert got.free == Free(cpu=1.0, memory_mib=261120, gpus=0)
    assert got.reason.startswith("needs 2 CPU cores (1 × 2) but pool 'team' has 1 free (held by chat)")


def test_memory_quota_caps_what_is_free_below_the_pool_size() -> None:
    pool = PoolBase(name="team", cpu_cores=64, memory_mib=262144, quota_memory_mib=8192)

    got = admit(pool, [Claim("chat", cpu(1, 6144))], Claim("new", cpu(1, 4096)))

    assert got == Admission(
        False,
        Free(cpu=63.0, memory_mib=2048, gpus=0),
        "needs 4096 MiB memory (1 × 4096) but pool 'team' has 2048 MiB free (held by chat)",
        ("chat",),
    )


def test_free_never_shows_negative_amounts_when_the_pool_is_overcommitted() -> None:
    held = [Claim("chat", cpu(6, 12288), replicas=2)]

    assert free_of(LOCAL, held) == Free(cpu=0.0, memory_mib=0, gpus=0)


# ------------------------------------------------------------------------------------------------ pool shape


@pytest.mark.parametrize("resources", [gpus(1), gpu_slice(1024)], ids=["whole", "slice"])
def test_a_gpu_asked_of_a_cpu_only_pool_is_refused(resources: Resources) -> None:
    got = admit(LOCAL, [], Claim("new", resources))

    assert got == Admission(
        False, Free(cpu=8, memory_mib=16384, gpus=0), "pool 'local' has no GPUs: ask for CPU only, or pick a GPU pool"
    )


def test_a_slice_asked_of_a_whole_gpu_pool_is_refused() -> None:
    got = admit(WHOLE, [], Claim("new", gpu_slice(4096)))

    assert got.fits is False
    assert got.reason == (
        "pool 'gpu' hands out whole GPUs only: ask for gpus=1, or pick a pool that shares GPU memory (HAMi)"
    )


def test_a_slice_must_be_a_multiple_of_the_pools_slice_size() -> None:
    got = admit(HAMI, [], Claim("new", gpu_slice(1500)))

    assert got.fits is False
    assert got.reason == "GPU memory slices come in multiples of 1024 MiB in pool 'shared'"


def test_a_slice_larger_than_one_gpu_is_refused() -> None:
    got = admit(HAMI, [], Claim("new", gpu_slice(32768)))

    assert got.fits is False
    assert got.reason == "a slice of 32768 MiB exceeds one GPU (16384 MiB) in pool 'shared'"


def test_more_gpus_per_replica_than_the_pool_has_is_refused() -> None:
    got = admit(WHOLE, [], Claim("new", gpus(4)))

    assert got.fits is False
    assert got.reason == "pool 'gpu' has 2 GPUs per claim at most; 4 asked"


# ------------------------------------------------------------------------------------------------ GPU placement


def test_whole_gpus_fit_until_every_gpu_is_taken() -> None:
    held = [Claim("chat", gpus(1))]

    assert admit(WHOLE, held, Claim("new", gpus(1))) == Admission(
        True, Free(cpu=31.0, memory_mib=130048, gpus=1, gpu_total=2), holders=("chat",), gpus=((1,),)
    )
    assert admit(WHOLE, held, Claim("new", gpus(1), replicas=2)).fits is False


def test_no_whole_gpu_left_names_the_misfit_and_the_holders() -> None:
    got = admit(WHOLE, [Claim("train", gpus(2))], Claim("chat", gpus(1)))

    assert got.fits is False
    assert got.reason.startswith("no room for 1 whole GPU for chat in pool 'gpu': free are 31 CPU cores")
    assert got.reason.endswith("(held by train)")


def test_no_whole_gpu_left_says_how_many_gpus_are_free() -> None:
    got = admit(WHOLE, [Claim("train", gpus(2))], Claim("chat", gpus(1)))

    assert "0 of 2 GPUs" in got.reason


def test_slices_pack_together_so_a_whole_gpu_stays_idle() -> None:
    held = [Claim("a", gpu_slice(8192)), Claim("b", gpu_slice(8192))]

    assert free_of(HAMI, held) == Free(cpu=14.0, memory_mib=63488, gpus=1, gpu_memory_mib=(0, 16384), gpu_total=2)
    assert admit(HAMI, held, Claim("train", gpus(1))).fits is True


def test_slices_never_land_on_a_gpu_held_whole() -> None:
    held = [Claim("train", gpus(1)), Claim("a", gpu_slice(12288))]

    assert free_of(HAMI, held) == Free(cpu=14.0, memory_mib=63488, gpus=0, gpu_memory_mib=(4096,), gpu_total=2)
    assert admit(HAMI, held, Claim("b", gpu_slice(4096))).fits is True
    got = admit(HAMI, held, Claim("b", gpu_slice(8192)))
    assert got == Admission(
        False,
        Free(cpu=14.0, memory_mib=63488, gpus=0, gpu_memory_mib=(4096,), gpu_total=2),
        "no room for a 8192 MiB GPU slice for b in pool 'shared': free are 14 CPU cores, 63488 MiB memory, "
        "0 of 2 GPUs, largest GPU memory slice 4096 MiB (held by a, train)",
        ("a", "train"),
    )


def test_a_whole_gpu_is_refused_when_every_gpu_carries_a_slice() -> None:
    held = [Claim("a", gpu_slice(8192)), Claim("b", gpu_slice(12288))]

    got = admit(HAMI, held, Claim("train", gpus(1)))

    assert got.reason == (
        "no room for 1 whole GPU for train in pool 'shared': free are 14 CPU cores, 63488 MiB memory, "
        "0 of 2 GPUs, largest GPU memory slice 8192 MiB (held by a, b)"
    )


def test_every_replica_of_a_request_is_placed() -> None:
    got = admit(HAMI, [], Claim("chat", gpu_slice(12288), replicas=3))

    assert got.fits is False
    assert got.reason.startswith("no room for a 12288 MiB GPU slice for chat in pool 'shared'")


def test_a_slice_that_fits_by_total_memory_but_on_no_real_gpu_is_refused_naming_the_largest_free_piece() -> None:
    held = [Claim("a", gpu_slice(8192), on=((0,),)), Claim("b", gpu_slice(8192), on=((1,),))]
    unplaced = [Claim("a", gpu_slice(8192)), Claim("b", gpu_slice(8192))]

    assert admit(HAMI, unplaced, Claim("c", gpu_slice(12288))).fits is True  # as if b could move beside a
    got = admit(HAMI, held, Claim("c", gpu_slice(12288)))

    assert got.fits is False
    assert got.free.gpu_memory_mib == (8192, 8192)
    assert got.reason == (
        "no room for a 12288 MiB GPU slice for c in pool 'shared': free are 14 CPU cores, 63488 MiB memory, "
        "0 of 2 GPUs, largest GPU memory slice 8192 MiB (held by a, b)"
    )


def test_a_slice_goes_onto_the_fullest_gpu_that_takes_it() -> None:
    held = [Claim("a", gpu_slice(4096), on=((0,),)), Claim("b", gpu_slice(8192), on=((1,),))]

    assert admit(HAMI, held, Claim("c", gpu_slice(4096))).gpus == ((1,),)  # GPU 1 has 8192 free, GPU 0 12288
    assert admit(HAMI, held, Claim("c", gpu_slice(12288))).gpus == ((0,),)  # only GPU 0 takes it
    assert admit(HAMI, held, Claim("c", gpu_slice(8192), replicas=2)).gpus == ((1,), (0,))


def test_first_fit_is_a_policy_too() -> None:
    held = [Claim("a", gpu_slice(4096), on=((0,),)), Claim("b", gpu_slice(8192), on=((1,),))]

    assert admit(HAMI, held, Claim("c", gpu_slice(4096)), policy=first_fit).gpus == ((0,),)


def test_whole_gpus_go_where_no_placed_slice_is_and_cpu_requests_get_no_gpus() -> None:
    held = [Claim("a", gpu_slice(4096), on=((0,),))]

    assert admit(HAMI, held, Claim("train", gpus(1))).gpus == ((1,),)
    assert admit(HAMI, held, Claim("train", gpus(2))).fits is False
    assert admit(HAMI, held, Claim("web", cpu(1))).gpus == ()


def test_replicas_without_a_known_place_are_placed_beside_the_known_ones() -> None:
    pending = Claim("a", gpu_slice(12288), replicas=2, on=((1,),))  # replica 0 sits on GPU 1, replica 1 is pending

    assert free_of(HAMI, [pending]).gpu_memory_mib == (4096, 4096)
    assert admit(HAMI, [pending], Claim("b", gpu_slice(8192))).fits is False


def test_a_known_place_outside_the_pool_is_ignored() -> None:
    gone = Claim("a", gpu_slice(8192), on=((5,),))  # the GPU left the pool since

    assert free_of(HAMI, [gone]).gpu_memory_mib == (16384, 16384)


# ------------------------------------------------------------------------------------------------ GPU quota


def test_whole_gpu_quota_refuses_beyond_it_and_caps_the_free_gpus() -> None:
    pool = PoolBase(
        name="gpu",
        sharing=Sharing.WHOLE,
        cpu_cores=32,
        memory_mib=131072,
        gpu_count=4,
        gpu_memory_mib=81920,
        quota_gpus=2,
    )

    got = admit(pool, [Claim("chat", gpus(1))], Claim("new", gpus(2)))

    assert got == Admission(
        False,
        Free(cpu=31.0, memory_mib=130048, gpus=1, gpu_total=4),
        "needs 2 GPUs of quota but pool 'gpu' has 1 of 2 left (held by chat)",
        ("chat",),
    )


def test_slices_count_against_the_gpu_quota_as_fractions_of_a_gpu() -> None:
    pool = PoolBase(
        name="shared",
        sharing=Sharing.HAMI,
        cpu_cores=16,
        memory_mib=65536,
        gpu_count=4,
        gpu_memory_mib=16384,
        quota_gpus=1,
    )
    held = [Claim("a", gpu_slice(4096), replicas=3)]

    assert admit(pool, held, Claim("b", gpu_slice(4096))).fits is True
    got = admit(pool, held, Claim("b", gpu_slice(8192)))

    assert got.reason == "needs 0.5 GPUs of quota but pool 'shared' has 0.25 of 1 left (held by a)"
    assert got.free.gpus == 0  # 0.25 of a GPU left in quota: no whole GPU may be taken


# ------------------------------------------------------------------------------------------------ edge cases


@pytest.mark.parametrize(
    "request_", [Claim("x", cpu(1000)), Claim("x", gpus(1)), Claim("x", gpu_slice(1500))], ids=["cpu", "gpu", "slice"]
)
def test_zero_replicas_always_fit(request_: Claim) -> None:
    zero = Claim(request_.owner, request_.resources, replicas=0)

    assert admit(LOCAL, [Claim("chat", cpu(8))], zero) == Admission(
        True, Free(cpu=0.0, memory_mib=15360, gpus=0), holders=("chat",)
    )


def test_claims_with_zero_replicas_hold_nothing_and_are_not_named() -> None:
    held = [Claim("stopped", cpu(8, 16384), replicas=0), Claim("chat", cpu(1))]

    got = admit(LOCAL, held, Claim("new", cpu(8)))

    assert got.holders == ("chat",)
    assert got.reason.startswith("needs 8 CPU cores (1 × 8) but pool 'local' has 7 free (held by chat)")


def test_admit_does_not_change_its_inputs() -> None:
    held = [Claim("a", gpu_slice(8192)), Claim("train", gpus(1))]
    before = list(held)
    request = Claim("b", gpu_slice(16384), replicas=2)

    admit(HAMI, held, request)

    assert held == before
    assert request == Claim("b", gpu_slice(16384), replicas=2)
