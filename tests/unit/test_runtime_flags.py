"""Runtime flags are judged by what the runtime's parser reads them as: every spelling of a refused flag is refused,
with the flag it stands for and why; allowed flags pass in any spelling."""

from __future__ import annotations

import pytest

from studio.errors import InvalidSpec
from studio.runtime_flags import (
    COVE_SETS,
    ENDS_OPTIONS,
    LOADS_PICKLE,
    MEDIA_PATH,
    OVERRIDES_CONFIG,
    READS_PATH,
    RUNS_CODE,
    SENDS_DATA,
    TABLES,
    TRUSTS_CODE,
    Refusal,
    canonical,
    checked_args,
    custom_reserved,
    refusals,
)
from studio.values import RuntimeKind

NOT_ALLOWED = "it is not among the {} flags Cove allows (see docs/security.md#runtime-flags)"


@pytest.mark.parametrize(
    ("runtime", "written", "flag", "reason"),
    [
        # Cove's own flags, in each form a parser takes
        ("vllm", "--served-model-name", "--served-model-name", COVE_SETS),
        ("vllm", "--served_model_name", "--served-model-name", COVE_SETS),
        ("vllm", "--served-model", "--served-model-name", COVE_SETS),
        ("vllm", "--served_model", "--served-model-name", COVE_SETS),
        ("vllm", "--served-model-name=x", "--served-model-name", COVE_SETS),
        ("vllm", "--port=9000", "--port", COVE_SETS),
        ("vllm", "--po", "--port", COVE_SETS),
        ("vllm", "--host", "--host", COVE_SETS),
        ("vllm", "--api-key=k", "--api-key", COVE_SETS),
        ("vllm", "--api_k", "--api-key", COVE_SETS),
        ("vllm", "--model=/etc", "--model", COVE_SETS),
        ("vllm", "--revision", "--revision", COVE_SETS),
        ("vllm", "--enable-lora", "--enable-lora", COVE_SETS),
        ("sglang", "--model-path", "--model-path", COVE_SETS),
        ("sglang", "--model_path=/x", "--model-path", COVE_SETS),
        ("sglang", "--served-model", "--served-model-name", COVE_SETS),
        ("transformers", "--port", "--port", COVE_SETS),
        ("transformers", "--hos", "--host", COVE_SETS),
        # code from the model's repository
        ("vllm", "--trust-remote-code", "--trust-remote-code", TRUSTS_CODE),
        ("vllm", "--trust_remote_code", "--trust-remote-code", TRUSTS_CODE),
        ("vllm", "--trust", "--trust-remote-code", TRUSTS_CODE),
        ("vllm", "--trust-remote-code=True", "--trust-remote-code", TRUSTS_CODE),
        ("sglang", "--trust-remote", "--trust-remote-code", TRUSTS_CODE),
        ("transformers", "--trust-remote-code", "--trust-remote-code", TRUSTS_CODE),
        # files on the server's disk
        ("vllm", "--allowed-local-media-path", "--allowed-local-media-path", MEDIA_PATH),
        ("vllm", "--allowed_local_media_path=/", "--allowed-local-media-path", MEDIA_PATH),
        ("vllm", "--allowed-local", "--allowed-local-media-path", MEDIA_PATH),
        ("vllm", "--chat-template", "--chat-template", READS_PATH),
        ("vllm", "--config", "--config", READS_PATH),
        ("vllm", "--download-dir", "--download-dir", READS_PATH),
        ("vllm", "--tokenizer=/etc", "--tokenizer", READS_PATH),
        ("vllm", "--lora-modules", "--lora-modules", READS_PATH),
        ("sglang", "--tokenizer-path", "--tokenizer-path", READS_PATH),
        ("transformers", "--decision-config", "--decision-config", READS_PATH),
        # code named by the flag, data sent elsewhere, pickles, configs
        ("vllm", "--middleware", "--middleware", RUNS_CODE),
        ("vllm", "--tool-parser-plugin", "--tool-parser-plugin", RUNS_CODE),
        ("vllm", "--worker_cls", "--worker-cls", RUNS_CODE),
        ("sglang", "--enable-custom-logit-processor", "--enable-custom-logit-processor", RUNS_CODE),
        ("vllm", "--otlp-traces-endpoint=http://x", "--otlp-traces-endpoint", SENDS_DATA),
        ("vllm", "--load-format", "--load-format", LOADS_PICKLE),
        ("vllm", "--hf-overrides", "--hf-overrides", OVERRIDES_CONFIG),
        ("sglang", "--json-model-override-args", "--json-model-override-args", OVERRIDES_CONFIG),
        # the end of the options
        ("vllm", "--", "--", ENDS_OPTIONS),
        ("transformers", "--", "--", ENDS_OPTIONS),
        # not on the allowlist
        ("vllm", "--no-such-flag", "--no-such-flag", NOT_ALLOWED.format("vllm")),
        ("vllm", "-x", "-x", NOT_ALLOWED.format("vllm")),
        ("transformers", "--force-model", "--force-model", NOT_ALLOWED.format("transformers")),
        ("sglang", "--enable-prefix-caching", "--enable-prefix-caching", NOT_ALLOWED.format("sglang")),
    ],
)
def test_each_form_of_a_refused_flag_is_refused_with_the_flag_it_stands_for(
    runtime: str, written: str, flag: str, reason: str
) -> None:
    assert refusals(runtime, ["--dtype", "float16", written, "v"]) == [Refusal(written, flag, reason)]


def test_an_abbreviation_of_several_flags_is_refused_as_ambiguous() -> None:
    (refused,) = refusals("vllm", ["--max-num"])

    assert refused.reason == (
        "it abbreviates several flags (--max-num-batched-tokens, --max-num-partial-prefills, --max-num-seqs); "
        "write the one you mean in full"
    )


@pytest.mark.parametrize(
    ("runtime", "args"),
    [
        ("vllm", ["--max-model-len", "8192", "--enforce-eager", "-tp", "2", "--seed", "-1"]),
        ("vllm", ["--max_model_len=8192", "--gpu-mem", "0.5", "--enable_prefix_caching"]),
        ("vllm", ["--no-enable-prefix-caching", "--quantization", "awq", "--rope-scaling", '{"type": "yarn"}']),
        ("sglang", ["--context-length", "4096", "--tp", "2", "--mem-fraction-static=0.8"]),
        ("transformers", ["--device", "cpu", "--no-continuous-batching", "--dtype", "float32", "-q"]),
        ("transformers", ["--no-trust-remote-code", "--cb-num-blocks", "64"]),
    ],
)
def test_allowed_flags_pass_in_any_spelling(runtime: str, args: list[str]) -> None:
    assert refusals(runtime, args) == []


def test_only_an_admin_may_trust_remote_code() -> None:
    args = ["--trust_remote_code", "--max-model-len", "8"]

    assert refusals("vllm", args, may_trust_remote_code=True) == []
    assert [r.flag for r in refusals("vllm", args)] == ["--trust-remote-code"]
    # being an admin trusts the model's code, nothing else
    assert [r.flag for r in refusals("vllm", ["--trust", "--port", "1"], may_trust_remote_code=True)] == ["--port"]


def test_canonical_writes_each_flag_in_full_and_keeps_values() -> None:
    args = ["--max_model_len=8192", "-tp", "2", "--gpu-mem", "0.5", "--seed", "-1", "--note x", "plain"]

    assert canonical("vllm", args) == (
        "--max-model-len=8192",
        "--tensor-parallel-size",
        "2",
        "--gpu-memory-utilization",
        "0.5",
        "--seed",
        "-1",
        "--note x",
        "plain",
    )


def test_a_custom_image_takes_its_own_flags_but_not_those_cove_binds() -> None:
    command = ["srv", "--listen", "{port}", "--weights={model}", "--workers", "2"]

    assert custom_reserved(command)["--listen"] == COVE_SETS
    assert "--weights" in custom_reserved(command)
    assert "--workers" not in custom_reserved(command)
    assert refusals("custom", ["--workers", "4", "--anything-else", "--x=y"], local_command=command) == []
    refused = refusals("custom", ["--listen=1", "--weights", "/etc", "--port", "2"], local_command=command)
    assert [(r.written, r.flag) for r in refused] == [
        ("--listen=1", "--listen"),
        ("--weights", "--weights"),
        ("--port", "--port"),
    ]
    # an image run only on Kubernetes has no local command: Cove's own flags are still Cove's
    assert [r.flag for r in refusals("custom", ["--served_model_name", "x", "--trust-remote-code"])] == [
        "--served-model-name"
    ]


def test_checked_args_names_every_refused_flag_and_why() -> None:
    with pytest.raises(InvalidSpec) as caught:
        checked_args("vllm", ["--served_model", "x", "--allowed-local-media-path", "/", "--max-model-len", "8"])

    assert caught.value.message == (
        "runtime args refused for the vllm runtime: "
        f"--served_model (read as --served-model-name): {COVE_SETS}; "
        f"--allowed-local-media-path: {MEDIA_PATH}"
    )
    assert "docs/security.md#runtime-flags" in caught.value.hint
    assert checked_args("vllm", ["--max_model_len", "8"]) == ("--max-model-len", "8")


def test_no_flag_is_both_allowed_and_refused() -> None:
    for kind, table in TABLES.items():
        assert not table.allowed & set(table.refused), kind
        assert all(alias in table.allowed for alias in table.short.values()), kind
        assert kind in set(RuntimeKind)


def test_an_embedding_model_on_the_transformers_runtime_takes_only_the_embedders_flags() -> None:
    assert checked_args(RuntimeKind.TRANSFORMERS, ["--dev=cpu"], embeds=True) == ("--device=cpu",)
    with pytest.raises(InvalidSpec, match="--cb-num-blocks"):
        checked_args(RuntimeKind.TRANSFORMERS, ["--cb-num-blocks", "8"], embeds=True)
    assert checked_args(RuntimeKind.TRANSFORMERS, ["--cb-num-blocks", "8"]) == ("--cb-num-blocks", "8")
