"""Which runtime flags a deployment may pass to its model server: a pure check, per runtime, of the flags as the
runtime's own parser would read them.

A user's runtime args reach a process that runs with the model server's rights, so a flag is judged by what it
stands for, not by how it is spelled. Each flag is first normalised as the runtime's parser would: underscores read
as dashes (vLLM's parser does this), ``--flag=value`` split at the ``=``, and an abbreviation (argparse takes any
unique prefix) expanded against every flag Cove knows for that runtime. The full name is then checked against the
runtime's table: allowed, or refused with the reason (Cove sets it itself; it runs code; it reads or writes a path
on the server; it sends data elsewhere). A flag in no table is refused too: an allowlist, so a runtime's new flag
is refused until it is added here.

``--trust-remote-code`` runs Python code from the model's repository inside the model server; only an admin may
deploy with it (``may_trust_remote_code``). Custom images run their own command: there is no allowlist, but the flags
the image's local command binds to Cove's placeholders (``--port {port}``) are Cove's, as are Cove's usual ones.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from studio.errors import InvalidSpec
from studio.values import RuntimeKind

DOCS = "docs/security.md#runtime-flags"
TRUST_REMOTE_CODE = "--trust-remote-code"

# Why a flag is refused, by kind.
COVE_SETS = "Cove sets it itself: where the runtime listens, the model it loads, the name it serves and its key"
RUNS_CODE = "it makes the model server import or run code named by its value"
TRUSTS_CODE = "it runs Python code from the model's repository in the model server; only an admin may deploy with it"
READS_PATH = "its value is a path on the model server's disk, which the server would read or write"
MEDIA_PATH = "it lets requests read files from the model server's disk"
SENDS_DATA = "it sends requests' data to an address of its value's choosing"
LOADS_PICKLE = "it chooses how weights are loaded, including pickled weights that run code when loaded"
OVERRIDES_CONFIG = "it overrides the model's configuration as loaded, which decides what code the server runs"
ENDS_OPTIONS = "it ends the options, so what follows would be read as the model or a command"
SERVES_TLS = "Cove's gateway reaches the model server over its own network; TLS files are paths on the server's disk"

RESERVED = {f: COVE_SETS for f in ("--host", "--port", "--model", "--model-path", "--served-model-name", "--api-key")}

_VLLM_ALLOWED = """
--max-model-len --max-num-seqs --max-num-batched-tokens --gpu-memory-utilization --tensor-parallel-size
--pipeline-parallel-size --data-parallel-size --dtype --kv-cache-dtype --quantization --enforce-eager
--no-enforce-eager --enable-prefix-caching --no-enable-prefix-caching --enable-chunked-prefill
--no-enable-chunked-prefill --block-size --swap-space --cpu-offload-gb --seed --max-logprobs --tokenizer-mode
--enable-auto-tool-choice --tool-call-parser --reasoning-parser --guided-decoding-backend --max-lora-rank --max-loras
--max-cpu-loras --disable-log-requests --enable-log-requests --disable-log-stats --uvicorn-log-level
--distributed-executor-backend --limit-mm-per-prompt --max-seq-len-to-capture --scheduling-policy
--enable-expert-parallel --long-prefill-token-threshold --max-num-partial-prefills --rope-scaling --rope-theta
--disable-custom-all-reduce --response-role --disable-fastapi-docs --return-tokens-as-token-ids --max-log-len
--enable-request-id-headers --enable-server-load-tracking --disable-frontend-multiprocessing --preemption-mode
--cuda-graph-sizes --async-scheduling --override-generation-config --enable-prompt-tokens-details
--max-parallel-loading-workers --model-impl --disable-sliding-window --skip-tokenizer-init --num-scheduler-steps
--enable-reasoning --logprobs-mode --mm-processor-kwargs --disable-mm-preprocessor-cache
"""
_VLLM_REFUSED = {
    "--revision": COVE_SETS,  # the snapshot registered; Cove passes it
    "--enable-lora": COVE_SETS,  # with --lora-modules, for adapter versions
    "--lora-modules": READS_PATH,
    "--trust-remote-code": TRUSTS_CODE,
    "--allowed-local-media-path": MEDIA_PATH,
    "--middleware": RUNS_CODE,
    "--tool-parser-plugin": RUNS_CODE,
    "--reasoning-parser-plugin": RUNS_CODE,
    "--logits-processors": RUNS_CODE,
    "--logits-processor-pattern": RUNS_CODE,
    "--worker-cls": RUNS_CODE,
    "--worker-extension-cls": RUNS_CODE,
    "--config": READS_PATH,  # a YAML file of flags, read past this check
    "--chat-template": READS_PATH,
    "--generation-config": READS_PATH,
    "--download-dir": READS_PATH,
    "--tokenizer": READS_PATH,
    "--hf-config-path": READS_PATH,
    "--speculative-config": READS_PATH,  # names a draft model: a path or a download
    "--ssl-keyfile": SERVES_TLS,
    "--ssl-certfile": SERVES_TLS,
    "--ssl-ca-certs": SERVES_TLS,
    "--otlp-traces-endpoint": SENDS_DATA,
    "--kv-transfer-config": SENDS_DATA,
    "--load-format": LOADS_PICKLE,
    "--hf-overrides": OVERRIDES_CONFIG,
    "--model-loader-extra-config": OVERRIDES_CONFIG,
}
_VLLM_SHORT = {"-tp": "--tensor-parallel-size", "-pp": "--pipeline-parallel-size", "-dp": "--data-parallel-size"}

_SGLANG_ALLOWED = """
--context-length --mem-fraction-static --tp-size --tp --dp-size --dp --ep-size --max-running-requests
--max-total-tokens --chunked-prefill-size --max-prefill-tokens --schedule-policy --schedule-conservativeness --dtype
--kv-cache-dtype --quantization --disable-radix-cache --enable-torch-compile --cuda-graph-max-bs --disable-cuda-graph
--attention-backend --sampling-backend --grammar-backend --tool-call-parser --reasoning-parser --random-seed
--log-level --log-requests --stream-interval --enable-mixed-chunk --page-size --enable-metrics --watchdog-timeout
--preferred-sampling-params --max-loras-per-batch --skip-tokenizer-init --tokenizer-mode --enable-dp-attention
--model-impl
"""
_SGLANG_REFUSED = {
    "--revision": COVE_SETS,
    "--enable-lora": COVE_SETS,
    "--lora-paths": READS_PATH,
    "--trust-remote-code": TRUSTS_CODE,
    "--chat-template": READS_PATH,
    "--tokenizer-path": READS_PATH,
    "--download-dir": READS_PATH,
    "--file-storage-path": READS_PATH,
    "--speculative-draft-model-path": READS_PATH,
    "--ssl-keyfile": SERVES_TLS,
    "--ssl-certfile": SERVES_TLS,
    "--otlp-traces-endpoint": SENDS_DATA,
    "--enable-custom-logit-processor": RUNS_CODE,  # requests then carry serialised code the server runs
    "--load-format": LOADS_PICKLE,
    "--json-model-override-args": OVERRIDES_CONFIG,
}

_TRANSFORMERS_ALLOWED = """
--device --dtype --attn-implementation --quantization --continuous-batching --no-continuous-batching --cb-num-blocks
--cb-block-size --cb-max-batch-tokens --cb-max-memory-percent --cb-use-cuda-graph --no-cb-use-cuda-graph --compile
--no-compile --default-seed --log-level --model-timeout --no-trust-remote-code --chat-template-kwargs --reasoning
--enable-cors --no-enable-cors --format --json --quiet --no-truncate
"""
_TRANSFORMERS_REFUSED = {
    "--trust-remote-code": TRUSTS_CODE,
    "--decision-config": READS_PATH,
}


@dataclass(frozen=True)
class Table:
    """One runtime's flags: those a deployment may pass, those refused (with why), and single-dash aliases."""

    allowed: frozenset[str]
    refused: Mapping[str, str]
    short: Mapping[str, str]

    @property
    def known(self) -> tuple[str, ...]:
        return tuple(sorted(self.allowed | set(self.refused) | set(self.short)))


def _table(allowed: str, refused: Mapping[str, str], short: Mapping[str, str] | None = None) -> Table:
    return Table(frozenset(allowed.split()), {**RESERVED, **refused}, short or {})


TABLES: dict[RuntimeKind, Table] = {
    RuntimeKind.VLLM: _table(_VLLM_ALLOWED, _VLLM_REFUSED, _VLLM_SHORT),
    RuntimeKind.SGLANG: _table(_SGLANG_ALLOWED, _SGLANG_REFUSED),
    RuntimeKind.TRANSFORMERS: _table(_TRANSFORMERS_ALLOWED, _TRANSFORMERS_REFUSED, {"-q": "--quiet"}),
}
# An embedding model on the transformers runtime is served by Cove's own embedder (studio/embedder.py)
EMBEDDER = _table("--device", {})
PLACEHOLDER = re.compile(r"\{(model|model_id|host|port|name)\}")
NUMBER = re.compile(r"-\d+(\.\d*)?([eE][-+]?\d+)?")  # a negative number is a value, not a flag (as in argparse)


@dataclass(frozen=True)
class Refusal:
    """One refused argument: as written, the flag it stands for, and why it is refused."""

    written: str
    flag: str
    reason: str

    def describe(self) -> str:
        stands = "" if self.written.split("=", 1)[0] == self.flag else f" (read as {self.flag})"
        return f"{self.written}{stands}: {self.reason}"


def _normalised(name: str) -> str:
    """``--served_model_name`` → ``--served-model-name``: dashes and underscores read alike past the leading dashes."""
    stripped = name.lstrip("-")
    return name[: len(name) - len(stripped)] + stripped.replace("_", "-")


def custom_reserved(local_command: Sequence[str] | None) -> dict[str, str]:
    """The flags a custom image's local command binds to Cove's placeholders (``--port {port}``, ``--host={host}``):
    a deployment's args may not set them again, as they may not set Cove's usual ones."""
    bound = dict(RESERVED)
    parts = list(local_command or ())
    for i, part in enumerate(parts):
        name, _, value = part.partition("=")
        nxt = parts[i + 1] if i + 1 < len(parts) else ""
        if name.startswith("-") and (PLACEHOLDER.search(value) or (not value and PLACEHOLDER.search(nxt))):
            bound[_normalised(name)] = COVE_SETS
    return bound


def _expand(name: str, table: Table) -> tuple[str, str]:
    """(the flag ``name`` stands for, '' or why it cannot be read): exact, a single-dash alias, or a unique prefix."""
    if name in table.short:
        return table.short[name], ""
    if name in table.allowed or name in table.refused:
        return name, ""
    matches = [k for k in table.known if k.startswith(name)] if name.startswith("--") and len(name) > 2 else []
    if len(matches) == 1:
        return table.short.get(matches[0], matches[0]), ""
    if matches:
        shown = ", ".join(matches[:4]) + (", …" if len(matches) > 4 else "")
        return name, f"it abbreviates several flags ({shown}); write the one you mean in full"
    return name, ""


def _table_of(runtime: RuntimeKind | str, embeds: bool) -> Table | None:
    if embeds and runtime == RuntimeKind.TRANSFORMERS:
        return EMBEDDER
    return TABLES.get(RuntimeKind(runtime)) if runtime in set(RuntimeKind) else None


def _checked_table(runtime: RuntimeKind | str, local_command: Sequence[str] | None, embeds: bool = False) -> Table:
    """The runtime's table, or for a runtime without one, a table that refuses only what Cove binds."""
    return _table_of(runtime, embeds) or Table(frozenset(), custom_reserved(local_command), {})


def refusals(
    runtime: RuntimeKind | str,
    args: Sequence[str],
    *,
    local_command: Sequence[str] | None = None,
    may_trust_remote_code: bool = False,
    embeds: bool = False,
) -> list[Refusal]:
    """Each argument of ``args`` the model server of ``runtime`` may not be given, in order, with why. Values (what
    does not start with a dash, and negative numbers) are not judged; flags are normalised and expanded first.
    Runtimes without a table (custom images, and any kind not listed in ``TABLES``) take any flag but Cove's own
    and those ``local_command`` binds to placeholders (``custom_reserved``). An embedding model (``embeds``) on the
    transformers runtime is served by Cove's embedder, which takes only ``--device``."""
    table = _table_of(runtime, embeds)
    checked = _checked_table(runtime, local_command, embeds)
    found = []
    for arg in args:
        if arg == "--":
            found.append(Refusal(arg, arg, ENDS_OPTIONS))
            continue
        if not arg.startswith("-") or NUMBER.fullmatch(arg):
            continue
        flag, unreadable = _expand(_normalised(arg.split("=", 1)[0]), checked)
        reason = unreadable or checked.refused.get(flag, "")
        if flag == TRUST_REMOTE_CODE and may_trust_remote_code and not unreadable:
            reason = ""
        elif table is not None and not reason and flag not in table.allowed:
            reason = f"it is not among the {runtime} flags Cove allows (see {DOCS})"
        if reason:
            found.append(Refusal(arg, flag, reason))
    return found


def canonical(
    runtime: RuntimeKind | str,
    args: Sequence[str],
    *,
    local_command: Sequence[str] | None = None,
    embeds: bool = False,
) -> tuple[str, ...]:
    """``args`` with every flag written in full, as checked (``--served_model`` → ``--served-model-name``,
    ``--max_model_len=8`` → ``--max-model-len=8``); values and unknown flags as they were."""
    checked = _checked_table(runtime, local_command, embeds)
    out = []
    for arg in args:
        if arg == "--" or not arg.startswith("-") or NUMBER.fullmatch(arg):
            out.append(arg)
            continue
        name, eq, value = arg.partition("=")
        flag, unreadable = _expand(_normalised(name), checked)
        out.append((name if unreadable else flag) + eq + value)
    return tuple(out)


def checked_args(
    runtime: RuntimeKind | str,
    args: Sequence[str],
    *,
    local_command: Sequence[str] | None = None,
    may_trust_remote_code: bool = False,
    embeds: bool = False,
) -> tuple[str, ...]:
    """``args`` written in full (``canonical``) if the model server of ``runtime`` may be given all of them;
    InvalidSpec naming each refused flag and why otherwise (the API answers it with 422)."""
    refused = refusals(
        runtime, args, local_command=local_command, may_trust_remote_code=may_trust_remote_code, embeds=embeds
    )
    if refused:
        raise InvalidSpec(
            f"runtime args refused for the {runtime} runtime: " + "; ".join(r.describe() for r in refused),
            hint=f"remove them; the flags allowed and why the others are not are in {DOCS}",
        )
    return canonical(runtime, args, local_command=local_command, embeds=embeds)
