"""Sizing a GPU deployment by its memory plan (studio.sizing): the hardware a claim gives, what the runtime args
ask, the flags added where they are silent, and what of a pool would hold one request."""

from __future__ import annotations

from studio.memplan import shape_of
from studio.sizing import arg_value, default_context, hardware_for, planned, what_fits, with_flags
from studio.values import PoolBase, Resources, RuntimeKind, Sharing
from tests.unit.test_memplan import LLAMA3_8B

LLAMA = shape_of(LLAMA3_8B)
T4S = PoolBase(name="t4", sharing=Sharing.WHOLE, gpu_count=4, gpu_memory_mib=16384)
H100S = PoolBase(name="h100", sharing=Sharing.HAMI, gpu_count=2, gpu_memory_mib=81920, slice_mib=1024)


def test_args_are_read_in_both_spellings_the_last_winning() -> None:
    args = ["--max-model-len", "4096", "--dtype=half", "--max-model-len=2048"]
    assert arg_value(args, "--max-model-len") == "2048"
    assert arg_value(args, "--dtype") == "half"
    assert arg_value(args, "--kv-cache-dtype") is None


def test_the_plan_s_flags_are_added_only_where_the_user_set_none() -> None:
    plan_flags = ["--max-model-len", "8192", "--max-num-seqs", "11", "--gpu-memory-utilization", "0.9"]
    assert with_flags(["--max-num-seqs=2", "--enforce-eager"], plan_flags) == [
        "--max-num-seqs=2",
        "--enforce-eager",
        "--max-model-len",
        "8192",
        "--gpu-memory-utilization",
        "0.9",
    ]


def test_the_hardware_is_the_pool_s_gpus_or_the_slice_with_what_the_args_say() -> None:
    whole = hardware_for(T4S, Resources(gpus=2), runtime=RuntimeKind.VLLM, args=["--kv-cache-dtype", "fp8_e5m2"])
    assert whole is not None
    assert (whole.gpu_memory_mib, whole.gpus, whole.kv_cache_dtype, whole.context) == (16384, 2, "fp8", None)
    sliced = hardware_for(
        H100S, Resources(gpu_memory_mib=20480), runtime=RuntimeKind.SGLANG, args=["--mem-fraction-static", "0.8"],
        context=4096,
    )  # fmt: skip
    assert sliced is not None
    assert (sliced.gpu_memory_mib, sliced.gpus, sliced.memory_fraction, sliced.context) == (20480, 1, 0.8, 4096)
    assert hardware_for(PoolBase(name="x", gpu_count=1), Resources(gpus=1), runtime=RuntimeKind.VLLM) is None


def test_only_gpu_runtimes_on_gpus_are_planned() -> None:
    assert planned(RuntimeKind.VLLM, Resources(gpus=1))
    assert planned(RuntimeKind.SGLANG, Resources(gpu_memory_mib=1024))
    assert not planned(RuntimeKind.VLLM, Resources())
    assert not planned(RuntimeKind.TRANSFORMERS, Resources(gpus=1))


def test_what_fits_names_the_fewest_gpus_and_the_smallest_slice() -> None:
    one_t4 = hardware_for(T4S, Resources(gpus=1), runtime=RuntimeKind.VLLM, context=8192)
    assert one_t4 is not None
    assert what_fits(LLAMA, T4S, one_t4) == "needs 2 GPUs of 16 GiB at 8k context"
    small = hardware_for(H100S, Resources(gpu_memory_mib=10240), runtime=RuntimeKind.VLLM, context=8192)
    assert small is not None
    assert what_fits(LLAMA, H100S, small) == "needs 1 GPU of 80 GiB or a 20 GiB slice at 8k context"
    tiny = PoolBase(name="tiny", sharing=Sharing.WHOLE, gpu_count=1, gpu_memory_mib=8192)
    assert (
        what_fits(LLAMA, tiny, one_t4)
        == "nothing in pool 'tiny' holds one request at 8k context: ask for a shorter context"
    )


def test_the_default_context_is_the_model_s_capped() -> None:
    assert default_context(LLAMA) == 8192
    assert default_context(LLAMA.model_copy(update={"max_context": 131072})) == 32768
    assert default_context(LLAMA.model_copy(update={"max_context": None})) == 2048
