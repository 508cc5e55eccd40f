"""Notebook profiles from pools: which pools a user sees, the sizes each offers, what is free."""

from __future__ import annotations

from datetime import UTC, datetime

from hub.spawner import kubespawner_traits
from studio.models import PoolPublic
from studio.pools import Free
from studio.profiles import Profile, profiles_for
from studio.values import Resources

GIB = 1024


def pool(name: str, **kw: object) -> PoolPublic:
    values: dict[str, object] = {
        "name": name, "purpose": "dev", "sharing": "none", "gpu_model": "", "gpu_count": 0, "gpu_memory_mib": 0,
        "slice_mib": 128, "cpu_cores": 4, "memory_mib": 32 * GIB, "quota_gpus": None, "quota_cpu": None,
        "quota_memory_mib": None, "groups": [], "detected": False, "created_at": datetime(2026, 1, 1, tzinfo=UTC),
    }  # fmt: skip
    values.update(kw)
    return PoolPublic.model_validate(values)


FREE = Free(cpu=3, memory_mib=8 * GIB, gpus=0)


def test_a_cpu_pool_offers_core_sizes_up_to_its_cores_with_what_is_free() -> None:
    got = profiles_for([(pool("cpu", cpu_cores=2), FREE)], groups=[])

    assert got == [
        Profile("cpu-cpu-1", "dev · 1 core", "pool cpu; free now: 3 CPU cores, 8192 MiB memory", "cpu",
                Resources(cpu=1, memory_mib=2 * GIB)),
        Profile("cpu-cpu-2", "dev · 2 cores", "pool cpu; free now: 3 CPU cores, 8192 MiB memory", "cpu",
                Resources(cpu=2, memory_mib=4 * GIB)),
    ]  # fmt: skip


def test_gpu_pools_offer_whole_gpus_and_hami_pools_also_memory_slices() -> None:
    whole = pool("a100", sharing="whole", gpu_model="A100", gpu_count=2, gpu_memory_mib=80 * GIB, cpu_cores=32)
    hami = pool("l20", sharing="hami", gpu_model="L20", gpu_count=1, gpu_memory_mib=46068, cpu_cores=16)

    got = {p.slug: (p.display_name, p.resources) for p in profiles_for([(whole, FREE), (hami, FREE)], groups=[])}

    assert got == {
        "a100-gpu-1": ("dev · 1× A100", Resources(cpu=4, memory_mib=16 * GIB, gpus=1)),
        "a100-gpu-2": ("dev · 2× A100", Resources(cpu=8, memory_mib=32 * GIB, gpus=2)),
        "l20-gpu-1": ("dev · 1× L20", Resources(cpu=4, memory_mib=16 * GIB, gpus=1)),
        "l20-slice-4g": ("dev · 4 GiB slice of L20", Resources(cpu=2, memory_mib=8 * GIB, gpu_memory_mib=4 * GIB)),
        "l20-slice-8g": ("dev · 8 GiB slice of L20", Resources(cpu=2, memory_mib=8 * GIB, gpu_memory_mib=8 * GIB)),
        "l20-slice-16g": ("dev · 16 GiB slice of L20", Resources(cpu=2, memory_mib=8 * GIB, gpu_memory_mib=16 * GIB)),
        "l20-slice-24g": ("dev · 24 GiB slice of L20", Resources(cpu=2, memory_mib=8 * GIB, gpu_memory_mib=24 * GIB)),
        "l20-slice-32g": ("dev · 32 GiB slice of L20", Resources(cpu=2, memory_mib=8 * GIB, gpu_memory_mib=32 * GIB)),
    }  # a 48 GiB slice would not fit in 46068 MiB


def test_pools_are_filtered_by_group_and_purpose() -> None:
    pools = [
        (pool("open", cpu_cores=1), FREE),
        (pool("team", cpu_cores=1, groups=["ml", "research"]), FREE),
        (pool("serving", cpu_cores=1, purpose="serve"), FREE),
        (pool("anything", cpu_cores=1, purpose="any"), FREE),
        (pool("elsewhere", cpu_cores=1, cluster="east"), FREE),  # the hub spawns on its own cluster only
    ]

    assert [p.pool for p in profiles_for(pools, groups=[])] == ["open", "anything"]
    assert [p.pool for p in profiles_for(pools, groups=["research"])] == ["open", "team", "anything"]
    assert profiles_for(pools, groups=[])[1].display_name == "anything · 1 core"  # "any" pools are named by pool


def test_a_pool_smaller_than_one_core_still_offers_what_it_has() -> None:
    got = profiles_for([(pool("tiny", cpu_cores=0.5), FREE)], groups=[])

    assert [(p.slug, p.resources.cpu) for p in got] == [("tiny-cpu-0.5", 0.5)]


def test_kubespawner_traits_carry_the_profiles_size_gpus_and_its_pools_placement() -> None:
    taint = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    a100 = pool("a100", sharing="hami", gpu_model="A100", gpu_count=2, gpu_memory_mib=80 * GIB, cpu_cores=32,
                node_selector={"cove.dev/pool": "a100"}, tolerations=[taint])  # fmt: skip
    by_slug = {p.slug: p for p in profiles_for([(a100, FREE)], groups=[])}

    whole = kubespawner_traits(by_slug["a100-gpu-2"])
    assert whole == {
        "cpu_guarantee": 8.0, "cpu_limit": 8.0, "mem_guarantee": "32768M", "mem_limit": "32768M",
        "extra_resource_limits": {"nvidia.com/gpu": "2"},
        "node_selector": {"cove.dev/pool": "a100"}, "tolerations": [taint],
    }  # fmt: skip
    sliced = kubespawner_traits(by_slug["a100-slice-16g"])
    assert sliced["extra_resource_limits"] == {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "16384"}
    assert sliced["extra_annotations"] == {"hami.io/gpu-scheduler-policy": "binpack"}
    assert sliced["cpu_limit"] == 2.0
    assert sliced["mem_limit"] == "8192M"

    whole["node_selector"]["x"] = "y"  # the traits are copies: changing them leaves the profile alone
    whole["tolerations"].append({})
    assert by_slug["a100-gpu-2"].node_selector == {"cove.dev/pool": "a100"}
    assert by_slug["a100-gpu-2"].tolerations == [taint]
