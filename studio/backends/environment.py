"""The environment of the processes Cove starts on its own machine: model servers (``local``) and tasks (``tasks``:
fine-tunes, evaluations, benchmarks).

They inherit only what a program needs to run here: where programs and libraries are, the locale, the model caches,
and the GPU and runtime tuning variables. Cove's own settings (``COVE_*``: the database URL, the studio's key) and
anything else set for Cove stay out: a model server runs users' models and flags, and a task users' data and code
paths, and none needs them. What a process does need is given to it explicitly (``launch``): a runtime's variables,
a task's caches. Tasks need no database: they are handed a plan file (readable by its owner only) holding what they
may use (a report URL and token, a key limited to their deployments), and report over HTTP and through files. The Hub
token stays out too: models are loaded offline from the cache (``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

from collections.abc import Mapping

KEPT = frozenset(
    {"PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TEMP", "TMP", "PYTHONPATH"}
    | {"VIRTUAL_ENV", "LD_LIBRARY_PATH", "SSL_CERT_FILE", "XDG_CACHE_HOME"}
)
KEPT_PREFIXES = (
    "LC_", "HF_", "CUDA_", "NVIDIA_", "NCCL_", "TORCH", "PYTORCH_", "VLLM_", "SGLANG_", "TRANSFORMERS_", "OMP_",
)  # fmt: skip
WITHHELD = frozenset({"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"})


def child_env(parent: Mapping[str, str], launch: Mapping[str, str]) -> dict[str, str]:
    """A child process's environment: the allowed part of ``parent`` (``KEPT``, ``KEPT_PREFIXES``, less
    ``WITHHELD``), then what ``launch`` sets (which may set anything, a withheld name included). Pure."""
    kept = {k: v for k, v in parent.items() if (k in KEPT or k.startswith(KEPT_PREFIXES)) and k not in WITHHELD}
    return kept | dict(launch)
