"""The memory plan: will a model version serve on this GPU (or HAMi slice), with how much KV cache, how many
concurrent requests at a context length, how long a context at a concurrency, and the runtime flags that realise it.

Pure: a model's ``config.json`` (a dict) and a ``Hardware`` in, a ``Plan`` out. The arithmetic (docs/memory-plan.md):

- weights per GPU = parameters × bytes per parameter ÷ tensor parallelism (quantized formats quantize the decoder's
  linear layers; embeddings, norms and the LM head stay in 16 bits, as AWQ/GPTQ/FP8 checkpoints keep them);
- KV bytes per token (per GPU) = 2 × layers × max(1, kv_heads ÷ TP) × head_dim × KV bytes; with MLA (DeepSeek-V2/V3)
  layers × (kv_lora_rank + qk_rope_head_dim) × KV bytes, the same on every GPU (the latent is not split by heads);
  a sliding-window layer keeps at most the window's tokens of each request;
- KV budget per GPU = memory × the runtime's fraction − weights − a fixed reserve (activations of the profiling
  batch, CUDA graphs, the CUDA context). vLLM's ``--gpu-memory-utilization`` covers all of these, so the reserve is
  taken inside it; SGLang's ``--mem-fraction-static`` covers weights and KV pool only, its activations live in the
  rest, so there the reserve must fit in what the fraction leaves.
- the cache is handed out in blocks of ``BLOCK_TOKENS`` tokens (vLLM's default block size), so a request of
  ``n`` tokens takes ``ceil(n / 16)`` blocks.
"""

from __future__ import annotations

import enum
import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from studio.errors import InvalidSpec
from studio.runtimes import GPU_MEMORY_FRACTION, TENSOR_PARALLEL_FLAG
from studio.values import RuntimeKind

MIB = 1 << 20
BLOCK_TOKENS = 16
# Activations of the runtime's profiling batch (vLLM: 8192 batched tokens by default), CUDA graphs and the CUDA
# context: about 1 to 2 GiB for 7-8B models on vLLM 0.6-0.10; assumed per GPU, the same for every model.
DEFAULT_RESERVE_MIB = 1536
# When no concurrency is asked, the runtime is told to batch what fits, at most vLLM's default --max-num-seqs.
DEFAULT_MAX_SEQS = 256
# vLLM's assumption when config.json names no maximum length ("Assuming the model's maximum length is 2048").
UNKNOWN_MAX_CONTEXT = 2048
PLANNED_RUNTIMES = (RuntimeKind.VLLM, RuntimeKind.SGLANG)


class Precision(enum.StrEnum):
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"
    FP8 = "fp8"
    INT8 = "int8"
    INT4 = "int4"


BYTES = {
    Precision.FP32: 4.0,
    Precision.BF16: 2.0,
    Precision.FP16: 2.0,
    Precision.FP8: 1.0,
    Precision.INT8: 1.0,
    Precision.INT4: 0.5,
}
DTYPES = {"float32": Precision.FP32, "bfloat16": Precision.BF16, "float16": Precision.FP16, "half": Precision.FP16}
# AWQ/GPTQ keep one 16-bit scale (and a packed zero point) per group of weights: group_size 128 adds ~2.5 %.
GROUP_OVERHEAD_BYTES = 2.5


class Shape(BaseModel):
    """What the plan needs of a model, read from its config.json by ``shape_of``."""

    model_config = ConfigDict(frozen=True)

    layers: int = Field(gt=0)
    attention_heads: int = Field(gt=0)
    kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    sliding_window: int | None = None  # tokens a sliding-window layer keeps
    sliding_layers: int = 0  # how many of ``layers`` use the window
    mla_dim: int | None = None  # kv_lora_rank + qk_rope_head_dim, for multi-head latent attention
    parameters: int = Field(gt=0)
    unquantized_parameters: int = 0  # embeddings, LM head, norms: 16 bits even in quantized checkpoints
    precision: Precision = Precision.BF16  # of the weights
    activation_precision: Precision = Precision.BF16  # of activations, hence of an "auto" KV cache
    quantization: str | None = None  # the checkpoint's quant_method: awq, gptq, fp8, …
    group_size: int = 0  # AWQ/GPTQ: weights per scale
    max_context: int | None = None  # max_position_embeddings

    def kv_bytes_per_token(self, *, kv_bytes: float, tp: int) -> float:
        """KV-cache bytes one token takes on one GPU, over all layers."""
        if self.mla_dim:
            return self.layers * self.mla_dim * kv_bytes
        return 2 * self.layers * max(1, self.kv_heads // tp) * self.head_dim * kv_bytes

    def kv_bytes_per_request(self, tokens: int, *, kv_bytes: float, tp: int) -> float:
        """KV-cache bytes one request of ``tokens`` takes on one GPU, in whole blocks; sliding layers hold at most
        the window (plus the block being filled)."""
        per_layer = self.kv_bytes_per_token(kv_bytes=kv_bytes, tp=tp) / self.layers
        full = math.ceil(tokens / BLOCK_TOKENS) * BLOCK_TOKENS
        kept = full
        if self.sliding_window and self.sliding_layers:
            kept = min(full, (math.ceil(self.sliding_window / BLOCK_TOKENS) + 1) * BLOCK_TOKENS)
        return per_layer * ((self.layers - self.sliding_layers) * full + self.sliding_layers * kept)


class Hardware(BaseModel):
    """Where and how the model would run, and what is asked of it."""

    model_config = ConfigDict(frozen=True)

    gpu_memory_mib: int = Field(gt=0, description="Memory of each GPU, or of the HAMi slice.")
    gpus: int = Field(default=1, gt=0, description="GPUs, used as tensor-parallel ranks.")
    runtime: RuntimeKind = RuntimeKind.VLLM
    memory_fraction: float | None = Field(default=None, gt=0, le=1, description="Default: the runtime's own.")
    reserve_mib: int = Field(default=DEFAULT_RESERVE_MIB, ge=0)
    kv_cache_dtype: str = Field(default="auto", pattern="^(auto|fp8)$")
    weights: Precision | None = Field(default=None, description="Quantize to this when loading (default: as stored).")
    context: int | None = Field(default=None, gt=0, description="Tokens per request (default: the model's maximum).")
    concurrency: int | None = Field(default=None, gt=0, description="Requests served at once.")


class Plan(BaseModel):
    """The answer. ``fits`` False comes with ``reason``: what does not fit, and what would."""

    runtime: RuntimeKind
    fits: bool
    reason: str = ""
    gpus: int
    gpu_memory_mib: int
    memory_fraction: float
    reserve_mib: int
    weights_precision: Precision
    weights_mib_per_gpu: float
    kv_cache_dtype: str
    kv_bytes_per_token: float  # per GPU, all layers, before any sliding window
    kv_cache_mib_per_gpu: float
    kv_cache_tokens: int  # tokens the cache holds at full attention (what vLLM logs as "GPU KV cache size")
    context: int
    max_concurrency: int  # requests of ``context`` tokens that fit at once
    concurrency: int | None
    max_context: int  # the longest context at ``concurrency`` (1 when not given) that fits
    flags: list[str]


def _get(config: dict[str, Any], *names: str) -> Any:
    """The first of ``names`` set in ``config`` or its ``text_config`` (multimodal configs nest the decoder)."""
    for source in (config, config.get("text_config") or {}):
        for name in names:
            if source.get(name) is not None:
                return source[name]
    return None


def _need(config: dict[str, Any], *names: str) -> int:
    value = _get(config, *names)
    if value is None:
        raise InvalidSpec(
            f"config.json has no {' or '.join(names)}: the memory plan cannot be made",
            hint="give the parameter count and shape of this architecture, or plan a decoder-only model",
        )
    return int(value)


def _sliding(config: dict[str, Any], layers: int) -> tuple[int | None, int]:
    """The window and how many layers use it, as Gemma (``layer_types``), Qwen2 (``use_sliding_window`` from
    ``max_window_layers`` on) and Mistral (``sliding_window`` on every layer) write it."""
    window = _get(config, "sliding_window")
    types = _get(config, "layer_types")
    if types:
        sliding = sum(1 for t in types if "sliding" in str(t))
        return (int(window), sliding) if window and sliding else (None, 0)
    if not window:
        return None, 0
    if _get(config, "use_sliding_window") is not None:
        if not _get(config, "use_sliding_window"):
            return None, 0
        start = int(_get(config, "max_window_layers") or 0)
        return int(window), max(0, layers - start)
    model_type = str(config.get("model_type", ""))
    if model_type == "gemma2":
        return int(window), layers // 2  # even layers slide
    if model_type == "gemma3" or _get(config, "sliding_window_pattern"):
        pattern = int(_get(config, "sliding_window_pattern") or 6)  # every pattern-th layer is global
        return int(window), layers - layers // pattern
    return int(window), layers


def _parameters(config: dict[str, Any], *, hidden: int, heads: int, kv_heads: int, head_dim: int) -> tuple[int, int]:
    """(all parameters, the 16-bit part: embeddings, LM head, norms) of a decoder-only transformer: Llama-style
    attention or MLA, gated MLP, dense or mixture of experts."""
    layers, vocab = _need(config, "num_hidden_layers"), _need(config, "vocab_size")
    tied = bool(config.get("tie_word_embeddings", _get(config, "tie_word_embeddings") or False))
    embeddings = vocab * hidden * (1 if tied else 2)
    if _get(config, "kv_lora_rank"):
        rope, nope = _need(config, "qk_rope_head_dim"), _need(config, "qk_nope_head_dim")
        v_dim, kv_rank = _need(config, "v_head_dim"), _need(config, "kv_lora_rank")
        q_rank = _get(config, "q_lora_rank")
        q = hidden * q_rank + q_rank * heads * (rope + nope) if q_rank else hidden * heads * (rope + nope)
        attention = q + hidden * (kv_rank + rope) + kv_rank * heads * (nope + v_dim) + heads * v_dim * hidden
    else:
        attention = 2 * hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim
        if config.get("attention_bias") or config.get("model_type") in ("qwen2", "qwen2_moe"):
            attention += (heads + 2 * kv_heads) * head_dim
    dense_mlp = 3 * hidden * _need(config, "intermediate_size")
    experts = _get(config, "n_routed_experts", "num_local_experts", "num_experts")
    mlp_total = dense_mlp * layers
    if experts:
        expert_size = int(_get(config, "moe_intermediate_size") or _need(config, "intermediate_size"))
        shared = int(_get(config, "n_shared_experts") or 0) * 3 * hidden * expert_size
        shared += 3 * hidden * int(_get(config, "shared_expert_intermediate_size") or 0)
        moe = int(experts) * 3 * hidden * expert_size + shared + hidden * int(experts)
        dense_layers = int(_get(config, "first_k_dense_replace") or 0)
        mlp_total = dense_layers * dense_mlp + (layers - dense_layers) * moe
    norms = (2 * layers + 1) * hidden
    linear = layers * attention + mlp_total
    return linear + embeddings + norms, embeddings + norms


def _stored_precision(config: dict[str, Any]) -> tuple[Precision, Precision, str | None, int]:
    """(weights, activations, quant_method, group size) as the checkpoint stores them."""
    dtype = str(_get(config, "torch_dtype", "dtype") or "bfloat16")
    activation = DTYPES.get(dtype, Precision.BF16)
    quant = config.get("quantization_config") or {}
    method = str(quant.get("quant_method", "")).lower() or None
    if not method:
        return activation, activation, None, 0
    bits = int(quant.get("bits") or quant.get("w_bit") or 0)
    if quant.get("load_in_4bit"):
        bits = 4
    elif quant.get("load_in_8bit"):
        bits = 8
    if method == "fp8" or "fp8" in str(quant.get("fmt", "")):
        return Precision.FP8, activation, method, 0
    weights = {4: Precision.INT4, 8: Precision.INT8}.get(bits)
    if weights is None:
        raise InvalidSpec(
            f"quantization {method!r} with {bits or 'unknown'} bits is not one the plan knows",
            hint="give the weight precision (--weights int4|int8|fp8|bf16)",
        )
    group = int(quant.get("group_size") or quant.get("q_group_size") or 0)
    return weights, activation, method, max(group, 0)


def shape_of(config: dict[str, Any], *, parameters: int | None = None) -> Shape:
    """The plan's view of a model's ``config.json``. ``parameters`` overrides the count computed from the config
    (give it for architectures the count does not know). InvalidSpec when a field the plan needs is missing."""
    layers = _need(config, "num_hidden_layers", "n_layer", "num_layers")
    heads = _need(config, "num_attention_heads", "n_head")
    kv_heads = int(_get(config, "num_key_value_heads") or heads)
    hidden = _need(config, "hidden_size", "n_embd", "d_model")
    head_dim = int(_get(config, "head_dim") or hidden // heads)
    mla = _get(config, "kv_lora_rank")
    window, sliding = _sliding(config, layers)
    precision, activation, method, group = _stored_precision(config)
    if parameters is None:
        total, unquantized = _parameters(config, hidden=hidden, heads=heads, kv_heads=kv_heads, head_dim=head_dim)
    else:
        vocab = int(_get(config, "vocab_size") or 0)
        total, unquantized = parameters, min(parameters, vocab * hidden)
    return Shape(
        layers=layers,
        attention_heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        sliding_window=window,
        sliding_layers=sliding,
        mla_dim=int(mla) + _need(config, "qk_rope_head_dim") if mla else None,
        parameters=total,
        unquantized_parameters=unquantized,
        precision=precision,
        activation_precision=activation,
        quantization=method,
        group_size=group,
        max_context=_get(config, "max_position_embeddings", "n_positions"),
    )


def weights_bytes(shape: Shape, precision: Precision | None = None) -> float:
    """Bytes of all the weights (over all GPUs), the linear layers in ``precision`` (default: as stored)."""
    wanted = precision or shape.precision
    linear = shape.parameters - shape.unquantized_parameters
    per = BYTES[wanted]
    if wanted in (Precision.INT4, Precision.INT8) and shape.group_size:
        per += GROUP_OVERHEAD_BYTES / shape.group_size
    keep = BYTES[shape.activation_precision] if per < BYTES[shape.activation_precision] else per
    return linear * per + shape.unquantized_parameters * keep


def _mib(value: float) -> str:
    return f"{value / MIB:,.0f} MiB"


def _on_load(shape: Shape, wanted: Precision | None) -> str | None:
    """The --quantization value that turns the stored weights into ``wanted`` while loading (None: as stored)."""
    sixteen = (Precision.BF16, Precision.FP16, Precision.FP32)
    if wanted is None or wanted == shape.precision or (wanted in sixteen and shape.precision in sixteen):
        return None
    if shape.precision in sixteen and wanted == Precision.FP8:
        return "fp8"  # both runtimes quantize 16-bit weights to FP8 as they load them
    if shape.precision in sixteen and wanted == Precision.INT4:
        return "bitsandbytes"  # 4-bit NF4 on load
    raise InvalidSpec(
        f"a checkpoint stored as {shape.precision} cannot be loaded as {wanted}",
        hint="plan it as stored, or register a checkpoint quantized to that precision",
    )


class _Budget:
    """The KV cache of one GPU: what a request of ``n`` tokens takes and how many fit."""

    def __init__(self, shape: Shape, *, kv_bytes: float, tp: int, cache_bytes: float, limit: int) -> None:
        self.shape, self.kv_bytes, self.tp, self.limit = shape, kv_bytes, tp, limit
        self.cache_bytes = max(0.0, cache_bytes)

    def request(self, tokens: int) -> float:
        return self.shape.kv_bytes_per_request(tokens, kv_bytes=self.kv_bytes, tp=self.tp)

    def concurrency(self, tokens: int) -> int:
        return math.floor(self.cache_bytes / self.request(tokens))

    def longest(self, requests: int) -> int:
        """The longest context (up to the model's) of which ``requests`` fit at once; 0 if not even one token."""
        low, high = 0, self.limit
        while low < high:  # requests × request(n) grows with n: bisect on it
            mid = (low + high + 1) // 2
            if requests * self.request(mid) <= self.cache_bytes:
                low = mid
            else:
                high = mid - 1
        return low


def plan(shape: Shape, hardware: Hardware) -> Plan:
    """The memory plan of ``shape`` on ``hardware``. ``fits`` False says why in ``reason`` and what would fit;
    InvalidSpec for what cannot be planned at all (a runtime without a memory model, a precision it cannot load)."""
    hw, tp = hardware, hardware.gpus
    if hw.runtime not in PLANNED_RUNTIMES:
        raise InvalidSpec(f"runtime {hw.runtime} has no memory plan", hint="plan for vllm or sglang")
    quantize = _on_load(shape, hw.weights)
    fraction = hw.memory_fraction or float(GPU_MEMORY_FRACTION[hw.runtime][1])
    weights = weights_bytes(shape, hw.weights) / tp
    kv_bytes = BYTES[Precision.FP8] if hw.kv_cache_dtype == "fp8" else BYTES[shape.activation_precision]
    memory, reserve = hw.gpu_memory_mib * MIB, hw.reserve_mib * MIB
    inside = reserve if hw.runtime == RuntimeKind.VLLM else 0  # see the module's docstring
    limit = shape.max_context or UNKNOWN_MAX_CONTEXT
    context = hw.context or limit
    budget = _Budget(shape, kv_bytes=kv_bytes, tp=tp, cache_bytes=memory * fraction - weights - inside, limit=limit)
    per_token = shape.kv_bytes_per_token(kv_bytes=kv_bytes, tp=tp)
    blocks = math.floor(budget.cache_bytes / (per_token * BLOCK_TOKENS))
    most = budget.concurrency(context)
    reason = _why_not(shape, hw, budget, context=context, fraction=fraction, weights=weights, reserve=reserve)
    seqs = hw.concurrency or max(1, min(most, DEFAULT_MAX_SEQS))
    return Plan(
        runtime=hw.runtime,
        fits=not reason,
        reason=reason,
        gpus=tp,
        gpu_memory_mib=hw.gpu_memory_mib,
        memory_fraction=fraction,
        reserve_mib=hw.reserve_mib,
        weights_precision=hw.weights or shape.precision,
        weights_mib_per_gpu=round(weights / MIB, 1),
        kv_cache_dtype=hw.kv_cache_dtype,
        kv_bytes_per_token=per_token,
        kv_cache_mib_per_gpu=round(budget.cache_bytes / MIB, 1),
        kv_cache_tokens=max(0, blocks) * BLOCK_TOKENS,
        context=context,
        max_concurrency=max(0, most),
        concurrency=hw.concurrency,
        max_context=budget.longest(hw.concurrency or 1),
        flags=[] if reason else flags(hw, context=context, seqs=seqs, fraction=fraction, quantize=quantize),
    )


def _why_not(
    shape: Shape, hw: Hardware, budget: _Budget, *, context: int, fraction: float, weights: float, reserve: float
) -> str:
    """Why the plan does not fit, with what would; '' when it does."""
    tp = hw.gpus
    if shape.attention_heads % tp:
        ways = [str(n) for n in range(1, shape.attention_heads + 1) if shape.attention_heads % n == 0 and n <= 16]
        return (
            f"{tp} GPUs cannot split the model's {shape.attention_heads} attention heads evenly: "
            f"use {', '.join(ways)} GPUs"
        )
    if shape.max_context and context > shape.max_context:
        return (
            f"the model reads at most {shape.max_context} tokens, not {context}: ask for --context {shape.max_context}"
        )
    memory = hw.gpu_memory_mib * MIB
    if hw.runtime != RuntimeKind.VLLM and memory * (1 - fraction) < reserve:
        return (
            f"a memory fraction of {fraction:g} leaves {_mib(memory * (1 - fraction))} for activations and CUDA "
            f"graphs, under the {_mib(reserve)} assumed: lower it, or use a larger GPU or slice"
        )
    one = budget.request(context)
    if budget.cache_bytes < one:
        inside = reserve if hw.runtime == RuntimeKind.VLLM else 0
        need = math.ceil((weights + inside + one) / fraction / MIB)
        if budget.cache_bytes <= 0 or budget.longest(1) < min(context, 256):
            return (
                f"the weights take {_mib(weights)} per GPU ({shape.parameters / 1e9:.2f}B parameters in "
                f"{hw.weights or shape.precision}{f' over {tp} GPUs' if tp > 1 else ''}), and {fraction:g} of "
                f"{hw.gpu_memory_mib} MiB{f' less a reserve of {_mib(inside)}' if inside else ''} leaves "
                f"{_mib(max(0.0, memory * fraction - inside))} for the weights and the KV cache: one request of "
                f"{context} tokens needs a GPU or slice of at least {need} MiB, or more GPUs, or weights in "
                f"INT4/FP8"
            )
        return (
            f"one request of {context} tokens needs {_mib(one)} of KV cache per GPU; {_mib(budget.cache_bytes)} are "
            f"left after the weights: the longest context that fits is {budget.longest(1)} tokens "
            f"(--context {budget.longest(1)}), or use a GPU or slice of at least {need} MiB"
        )
    wanted = hw.concurrency or 1
    if budget.concurrency(context) < wanted:
        return (
            f"{wanted} requests of {context} tokens need {_mib(wanted * one)} of KV cache per GPU; "
            f"{_mib(budget.cache_bytes)} hold {budget.concurrency(context)} of them: at {wanted} requests the "
            f"longest context is {budget.longest(wanted)} tokens"
        )
    return ""


def flags(hw: Hardware, *, context: int, seqs: int, fraction: float, quantize: str | None) -> list[str]:
    """The runtime's command-line flags that realise the plan."""
    vllm = hw.runtime == RuntimeKind.VLLM
    argv = [
        "--max-model-len" if vllm else "--context-length",
        str(context),
        "--max-num-seqs" if vllm else "--max-running-requests",
        str(seqs),
        GPU_MEMORY_FRACTION[hw.runtime][0],
        f"{fraction:g}",
    ]
    if hw.kv_cache_dtype == "fp8":
        argv += ["--kv-cache-dtype", "fp8" if vllm else "fp8_e4m3"]
    if quantize:
        argv += ["--quantization", quantize]
    if hw.gpus > 1:
        argv += [TENSOR_PARALLEL_FLAG[hw.runtime], str(hw.gpus)]
    return argv
