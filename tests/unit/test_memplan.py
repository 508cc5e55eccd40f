"""The memory plan against published figures for well-known models (each source cited where it is used), and the
refusals a user acts on. Configs are the fields of each model's real config.json."""

from __future__ import annotations

import pytest

from studio.errors import InvalidSpec
from studio.memplan import Hardware, Precision, plan, shape_of, weights_bytes
from studio.values import RuntimeKind

GIB = 1 << 30
# https://huggingface.co/meta-llama/Llama-2-7b-hf/blob/main/config.json
LLAMA2_7B = {
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "max_position_embeddings": 4096,
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 32,
    "vocab_size": 32000,
    "tie_word_embeddings": False,
    "torch_dtype": "float16",
}
# https://huggingface.co/meta-llama/Meta-Llama-3-8B/blob/main/config.json
LLAMA3_8B = {
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "max_position_embeddings": 8192,
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}
# https://huggingface.co/mistralai/Mistral-7B-v0.1/blob/main/config.json
MISTRAL_7B = {
    "model_type": "mistral",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "max_position_embeddings": 32768,
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "sliding_window": 4096,
    "vocab_size": 32000,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}
# https://huggingface.co/Qwen/Qwen2.5-0.5B-Instruct/blob/main/config.json
QWEN25_05B = {
    "model_type": "qwen2",
    "hidden_size": 896,
    "intermediate_size": 4864,
    "max_position_embeddings": 32768,
    "max_window_layers": 21,
    "num_attention_heads": 14,
    "num_hidden_layers": 24,
    "num_key_value_heads": 2,
    "sliding_window": None,
    "use_sliding_window": False,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "vocab_size": 151936,
}
# https://huggingface.co/deepseek-ai/DeepSeek-V3/blob/main/config.json
DEEPSEEK_V3 = {
    "model_type": "deepseek_v3",
    "hidden_size": 7168,
    "intermediate_size": 18432,
    "moe_intermediate_size": 2048,
    "n_routed_experts": 256,
    "n_shared_experts": 1,
    "first_k_dense_replace": 3,
    "num_hidden_layers": 61,
    "num_attention_heads": 128,
    "num_key_value_heads": 128,
    "kv_lora_rank": 512,
    "q_lora_rank": 1536,
    "qk_rope_head_dim": 64,
    "qk_nope_head_dim": 128,
    "v_head_dim": 128,
    "vocab_size": 129280,
    "max_position_embeddings": 163840,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "quantization_config": {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic"},
}
# https://huggingface.co/TheBloke/Llama-2-7B-AWQ/blob/main/config.json: the Llama-2-7B shape, AWQ 4-bit, group 128
LLAMA2_7B_AWQ = LLAMA2_7B | {
    "quantization_config": {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True, "version": "gemm"}
}


def test_llama2_7b_is_multi_head_attention_at_half_a_mib_per_token_in_16_bits() -> None:
    # "For Llama 2 7B at half precision, each token requires approximately 0.5 MB of KV cache ... 524,288 bytes per
    # token": https://www.systemoverflow.com/learn/ml-model-serving/inference-latency-optimization/what-is-kv-cache-and-why-does-it-dominate-memory-in-llm-inference
    shape = shape_of(LLAMA2_7B)
    assert shape.kv_bytes_per_token(kv_bytes=2, tp=1) == 524_288
    # Llama 2 7B has 6.74B parameters (the Llama 2 paper, arXiv:2307.09288, Table 1 and the model card).
    assert shape.parameters / 1e9 == pytest.approx(6.74, abs=0.01)


def test_llama3_8b_matches_what_vllm_logs_on_an_a100_40gb() -> None:
    # vLLM's own startup log for meta-llama/Meta-Llama-3-8B on one A100 40GB
    # (https://github.com/vllm-project/vllm/issues/12330): total_gpu_memory (39.50GiB) x gpu_memory_utilization
    # (0.90); "model weights take 14.96GiB; non_torch_memory takes 0.10GiB; PyTorch activation peak memory takes
    # 9.37GiB; the rest of the memory reserved for KV Cache is 11.12GiB"; "# GPU blocks: 5691" (× 16 tokens);
    # "Maximum concurrency for 8192 tokens per request: 11.12x". GQA: 8 KV heads, 128 KiB per token.
    shape = shape_of(LLAMA3_8B)
    assert shape.kv_bytes_per_token(kv_bytes=2, tp=1) == 128 * 1024
    assert weights_bytes(shape) / GIB == pytest.approx(14.96, abs=0.01)
    found = plan(shape, Hardware(gpu_memory_mib=round(39.5 * 1024), reserve_mib=round(9.47 * 1024), context=8192))
    assert found.fits
    assert found.kv_cache_tokens == pytest.approx(5691 * 16, rel=0.002)
    assert found.max_concurrency == 11
    assert found.flags == ["--max-model-len", "8192", "--max-num-seqs", "11", "--gpu-memory-utilization", "0.9"]


def test_llama3_8b_at_its_full_context_on_an_l4_is_refused_naming_the_longest_that_fits() -> None:
    # kvplan's worked example (https://pypi.org/project/kvplan/0.1.1/): Llama-3.1-8B on one L4 (22.49 GiB) at
    # gpu_memory_utilization 0.92, 0.83 GiB of runtime overhead: "KV cache 4.91 GiB available", "40,208 tokens",
    # and at max_model_len 131072 "vLLM will not start ... the longest length that fits is 40192".
    llama31 = LLAMA3_8B | {"max_position_embeddings": 131072}
    hardware = Hardware(gpu_memory_mib=round(22.49 * 1024), memory_fraction=0.92, reserve_mib=round(0.83 * 1024))
    found = plan(shape_of(llama31), hardware)
    assert not found.fits
    assert found.kv_cache_tokens == pytest.approx(40_208, rel=0.005)
    assert found.max_context == pytest.approx(40_192, rel=0.005)
    assert f"the longest context that fits is {found.max_context} tokens" in found.reason
    assert found.flags == []


def test_mistral_7b_keeps_at_most_its_4096_token_window_per_request() -> None:
    # Mistral 7B: "sliding window attention ... bounds KV cache to W per layer", W = 4096, with GQA (8 KV heads):
    # https://fridayswithfaraday.com/posts/frontier-arch-mistral-sliding-window and the paper (arXiv:2310.06825).
    shape = shape_of(MISTRAL_7B)
    assert (shape.sliding_window, shape.sliding_layers) == (4096, 32)
    at_window = shape.kv_bytes_per_request(4096, kv_bytes=2, tp=1)
    assert shape.kv_bytes_per_request(32768, kv_bytes=2, tp=1) == pytest.approx(at_window, rel=0.01)
    assert at_window == pytest.approx(4096 * 128 * 1024, rel=0.01)
    found = plan(shape, Hardware(gpu_memory_mib=24 * 1024, context=32768))
    assert found.fits
    assert found.max_concurrency >= 8


def test_qwen2_sliding_window_applies_only_when_the_config_turns_it_on_from_max_window_layers() -> None:
    assert shape_of(QWEN25_05B).sliding_layers == 0
    turned_on = QWEN25_05B | {"use_sliding_window": True, "sliding_window": 4096}
    assert shape_of(turned_on).sliding_layers == 24 - 21
    gemma_like = QWEN25_05B | {"layer_types": ["sliding_attention", "full_attention"] * 12, "sliding_window": 512}
    assert (shape_of(gemma_like).sliding_window, shape_of(gemma_like).sliding_layers) == (512, 12)


def test_qwen25_counts_its_tied_embeddings_once() -> None:
    # Qwen2.5-0.5B model card (https://huggingface.co/Qwen/Qwen2.5-0.5B): "Number of Parameters: 0.49B; Number of
    # Paramaters (Non-Embedding): 0.36B", "Tie Embedding"; 14 query and 2 KV heads of 64 dimensions.
    shape = shape_of(QWEN25_05B)
    assert shape.parameters / 1e9 == pytest.approx(0.494, abs=0.005)
    assert (shape.parameters - shape.unquantized_parameters) / 1e9 == pytest.approx(0.36, abs=0.005)
    assert shape.kv_bytes_per_token(kv_bytes=2, tp=1) == 2 * 24 * 2 * 64 * 2
    untied = shape_of(QWEN25_05B | {"tie_word_embeddings": False})
    assert untied.parameters - shape.parameters == 151936 * 896


def test_deepseek_v3_mla_takes_about_70_kb_per_token_on_every_gpu() -> None:
    # MLA caches kv_lora_rank + qk_rope_head_dim = 576 values per layer (DeepSeek-V2 paper, arXiv:2405.04434,
    # "equal to GQA with only 2.25 groups": https://hmellor.github.io/ml-notes/models/deepseek/DeepSeek-V2);
    # "(512 + 64) * 2 = 1152 bytes ... for 61 layers": https://provide.ai/the-exact-kv-cache-usage-of-deepseek-v4/,
    # "DeepSeek V3 (69 KiB/token)": https://botbeat.news/news/from-300kb-to-69kb-per-token-how-llm-architectures-are-solving-the-kv-cache-prob-3363
    shape = shape_of(DEEPSEEK_V3)
    assert shape.kv_bytes_per_token(kv_bytes=2, tp=1) == 61 * 576 * 2 == 70_272
    assert shape.kv_bytes_per_token(kv_bytes=2, tp=8) == 70_272  # the latent is not split across GPUs
    # 671B total parameters (DeepSeek-V3 technical report, arXiv:2412.19437), stored in FP8.
    assert shape.parameters / 1e9 == pytest.approx(671, rel=0.005)
    assert shape.precision == Precision.FP8
    on_h200s = plan(shape, Hardware(gpu_memory_mib=141 * 1024, gpus=8, context=32768))
    assert on_h200s.fits, on_h200s.reason
    assert on_h200s.flags[-2:] == ["--tensor-parallel-size", "8"]


def test_an_awq_int4_checkpoint_weighs_what_its_files_weigh() -> None:
    # TheBloke/Llama-2-7B-AWQ (https://huggingface.co/TheBloke/Llama-2-7B-AWQ): model.safetensors is 3.89 GB;
    # 4-bit linear layers with one scale per 128 weights, 16-bit embeddings and LM head.
    shape = shape_of(LLAMA2_7B_AWQ)
    assert (shape.precision, shape.quantization, shape.group_size) == (Precision.INT4, "awq", 128)
    assert weights_bytes(shape) / 1e9 == pytest.approx(3.89, abs=0.02)
    found = plan(shape, Hardware(gpu_memory_mib=8 * 1024, context=4096))
    assert found.fits
    assert "--quantization" not in found.flags


def test_kv_heads_are_split_across_gpus_but_never_below_one() -> None:
    shape = shape_of(LLAMA3_8B)  # 8 KV heads
    assert shape.kv_bytes_per_token(kv_bytes=2, tp=2) == 64 * 1024
    assert shape.kv_bytes_per_token(kv_bytes=2, tp=16) == shape.kv_bytes_per_token(kv_bytes=2, tp=8) == 16 * 1024


def test_gpus_that_cannot_split_the_attention_heads_are_refused_with_the_counts_that_can() -> None:
    found = plan(shape_of(QWEN25_05B), Hardware(gpu_memory_mib=24 * 1024, gpus=4))
    assert not found.fits
    assert "4 GPUs cannot split the model's 14 attention heads evenly: use 1, 2, 7, 14 GPUs" in found.reason


def test_a_slice_too_small_for_the_weights_is_refused_saying_how_much_is_needed() -> None:
    found = plan(shape_of(LLAMA3_8B), Hardware(gpu_memory_mib=10 * 1024, context=4096))
    assert not found.fits
    assert "the weights take 15,317 MiB per GPU (8.03B parameters in bf16)" in found.reason
    assert "leaves 7,680 MiB for the weights and the KV cache" in found.reason
    needed = int(found.reason.split("at least ")[1].split(" MiB")[0])
    assert plan(shape_of(LLAMA3_8B), Hardware(gpu_memory_mib=needed, context=4096)).fits
    assert not plan(shape_of(LLAMA3_8B), Hardware(gpu_memory_mib=needed - 64, context=4096)).fits
    # FP8 weights (quantized on load) make a 12 GiB slice large enough, and the flags say so.
    assert not plan(shape_of(LLAMA3_8B), Hardware(gpu_memory_mib=12 * 1024, context=4096)).fits
    fp8 = plan(shape_of(LLAMA3_8B), Hardware(gpu_memory_mib=12 * 1024, context=4096, weights=Precision.FP8))
    assert fp8.fits
    assert fp8.flags[-2:] == ["--quantization", "fp8"]


def test_a_concurrency_that_does_not_fit_names_what_does() -> None:
    found = plan(shape_of(LLAMA2_7B), Hardware(gpu_memory_mib=24 * 1024, context=4096, concurrency=8))
    assert not found.fits
    assert f"hold {found.max_concurrency} of them" in found.reason
    assert f"at 8 requests the longest context is {found.max_context} tokens" in found.reason
    assert plan(shape_of(LLAMA2_7B), Hardware(gpu_memory_mib=24 * 1024, context=found.max_context, concurrency=8)).fits


def test_fp8_kv_cache_doubles_the_tokens_and_sglang_gets_its_own_flags() -> None:
    auto = plan(shape_of(LLAMA3_8B), Hardware(gpu_memory_mib=80 * 1024, context=8192))
    fp8 = plan(shape_of(LLAMA3_8B), Hardware(gpu_memory_mib=80 * 1024, context=8192, kv_cache_dtype="fp8"))
    assert fp8.kv_cache_tokens == pytest.approx(2 * auto.kv_cache_tokens, rel=0.001)
    sglang = plan(
        shape_of(LLAMA3_8B),
        Hardware(
            gpu_memory_mib=80 * 1024,
            gpus=2,
            context=8192,
            concurrency=64,
            kv_cache_dtype="fp8",
            runtime=RuntimeKind.SGLANG,
        ),
    )
    assert sglang.memory_fraction == 0.85
    assert sglang.flags == [
        "--context-length", "8192", "--max-running-requests", "64", "--mem-fraction-static", "0.85",
        "--kv-cache-dtype", "fp8_e4m3", "--tp-size", "2",
    ]  # fmt: skip


def test_a_context_beyond_the_model_s_is_refused() -> None:
    found = plan(shape_of(LLAMA2_7B), Hardware(gpu_memory_mib=80 * 1024, context=8192))
    assert not found.fits
    assert "at most 4096 tokens" in found.reason


def test_what_cannot_be_planned_is_an_invalid_spec() -> None:
    with pytest.raises(InvalidSpec, match="num_attention_heads"):
        shape_of({"num_hidden_layers": 2})
    with pytest.raises(InvalidSpec, match="no memory plan"):
        plan(shape_of(LLAMA2_7B), Hardware(gpu_memory_mib=1024, runtime=RuntimeKind.TRANSFORMERS))
    with pytest.raises(InvalidSpec, match="cannot be loaded as bf16"):
        plan(shape_of(LLAMA2_7B_AWQ), Hardware(gpu_memory_mib=1024, weights=Precision.BF16))
