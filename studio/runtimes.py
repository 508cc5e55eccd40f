"""How each runtime kind is started: pure builders from a ``WorkloadSpec`` to a command line.

The local backend runs these commands as processes; the Kubernetes backend puts the same arguments in containers.
Cove assigns ``--host`` and ``--port``; users add other runtime flags through the deployment's runtime args, as far
as ``studio.runtime_flags`` allows them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

from studio.backends.base import WorkloadSpec
from studio.errors import RuntimeUnavailable
from studio.values import RuntimeKind

# In a cluster, a model server asks every caller for its deployment's own key, which only the gateway holds
# (``upstream_key``), so a notebook cannot call it around the gateway's API keys and metering. The container gets it
# in this variable (from a Secret); vLLM and SGLang are told with --api-key, a custom image may check it itself.
# `transformers serve` has no such option: there the NetworkPolicy (model servers admit only the gateway) is the wall.
UPSTREAM_KEY_ENV = "COVE_UPSTREAM_KEY"
UPSTREAM_KEY_RUNTIMES = (RuntimeKind.VLLM, RuntimeKind.SGLANG)
# KV cache for `transformers serve --continuous-batching`: without an explicit size it sizes itself from system RAM
# (7.6 GB resident for a 1 MB model). 512 blocks × 32 tokens = 16k tokens of cache.
TRANSFORMERS_DEFAULTS = (("--cb-num-blocks", "512"), ("--cb-block-size", "32"))
# GPU runtimes started as `python -m MODULE MODEL_FLAG MODEL --served-model-name NAME …`
SERVED_NAME_RUNTIMES = {
    RuntimeKind.VLLM: ("vllm.entrypoints.openai.api_server", "--model"),
    RuntimeKind.SGLANG: ("sglang.launch_server", "--model-path"),
}
# What a custom image's local command may use: the model's folder, its Hub id (repo@revision), where to listen,
# and the deployment's name (serve the model under it: the gateway sends it as the request's model).
PLACEHOLDERS = ("{model}", "{model_id}", "{host}", "{port}", "{name}")


@dataclass(frozen=True)
class Launch:
    argv: tuple[str, ...]
    env: dict[str, str]
    upstream_model: str  # the model name requests must carry


def upstream_key(secret: str, deployment: str) -> str:
    """The key a deployment's model servers ask for: derived from the studio's key, so the gateway (which has that
    key) and the backend (which writes it into the cluster) agree without storing it."""
    return hmac.new(secret.encode(), f"cove-upstream:{deployment}".encode(), hashlib.sha256).hexdigest()


def _has_flag(args: tuple[str, ...], flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in args)


def model_ref(spec: WorkloadSpec) -> str:
    """``repo@revision`` pins a Hub model to the snapshot that was registered; folders load as they are."""
    if spec.model_revision and not spec.model.startswith("/"):
        return f"{spec.model}@{spec.model_revision}"
    return spec.model


def adapter_flags(spec: WorkloadSpec, adapter: str) -> list[str]:
    """vLLM's flags to serve the LoRA adapter at ``adapter`` on the base, under the deployment's name."""
    if spec.runtime != RuntimeKind.VLLM:
        raise RuntimeUnavailable(
            f"runtime {spec.runtime} cannot serve a LoRA adapter", hint="deploy adapter versions with the vllm image"
        )
    flags = ["--enable-lora", "--lora-modules", f"{spec.name}={adapter}"]
    return flags + (["--max-lora-rank", str(spec.adapter_rank)] if spec.adapter_rank else [])


def is_embedding_architecture(architecture: str) -> bool:
    """Whether a model whose config.json names ``architecture`` is an encoder without a task head (``BertModel``,
    ``XLMRobertaModel``, ``MPNetModel``: what sentence-embedding models ship): it has no LM head to generate with,
    and its hidden states are what embeddings are made of. Heads are named ``…For…`` or ``…LMHead…``."""
    return architecture.endswith("Model") and "For" not in architecture and "LMHead" not in architecture


def upstream_model(spec: WorkloadSpec) -> str:
    if spec.runtime == RuntimeKind.TRANSFORMERS and spec.embeds:
        return spec.name  # Cove's embedder is started with --served-model-name NAME
    if spec.runtime == RuntimeKind.TRANSFORMERS:
        return model_ref(spec)  # `transformers serve MODEL` accepts only that exact name
    return spec.name  # other runtimes are started with --served-model-name NAME


def _python_runtime(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def local_availability(spec: WorkloadSpec, *, gpus_on_machine: int) -> str:
    """Why ``spec`` cannot run as a local process here, or '' if it can."""
    kind = spec.runtime
    if kind == RuntimeKind.CUSTOM:
        return (
            ""
            if spec.local_command
            else (
                f"image {spec.image} has no local command, so it runs only on Kubernetes; "
                "register the image with a local command to run it here"
            )
        )
    if kind == RuntimeKind.TRANSFORMERS:
        return "" if _python_runtime("transformers") else "transformers is not installed in Cove's environment"
    if kind in (RuntimeKind.VLLM, RuntimeKind.SGLANG):
        wanted = spec.resources.gpu_devices
        if not _python_runtime(str(kind)):
            return (
                f"runtime {kind} is not available here: the {kind} package is not installed; "
                "use the transformers image on CPU, or deploy to a GPU pool on Kubernetes"
            )
        if gpus_on_machine == 0 or wanted == 0:
            return (
                f"runtime {kind} is not available here: it needs an NVIDIA GPU and "
                f"{'this machine has none' if gpus_on_machine == 0 else 'the deployment asks for none'}"
            )
        return ""
    return f"runtime {kind} does not run as a local process; deploy it on Kubernetes"


def local_launch(
    spec: WorkloadSpec, *, host: str, port: int, python: str, models_dir: Path, gpu_ids: tuple[int, ...] = ()
) -> Launch:
    """The process to start for one replica of ``spec``. Raises RuntimeUnavailable for kinds that cannot run."""
    threads = str(max(1, math.floor(spec.resources.cpu)))
    env = {
        "HF_HUB_CACHE": str(models_dir),
        "HF_HUB_OFFLINE": "1",  # weights were resolved when the model was registered; never download at start
        "CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in gpu_ids),
        "OMP_NUM_THREADS": threads,
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONUNBUFFERED": "1",
    }
    kind, args, ref = spec.runtime, spec.args, model_ref(spec)
    if kind == RuntimeKind.TRANSFORMERS and spec.embeds:  # `transformers serve` has no /v1/embeddings
        argv = [python, "-m", "studio.embedder", ref, "--served-model-name", spec.name, "--host", host]
        argv += ["--port", str(port), "--device", "cuda" if gpu_ids else "cpu"]
        return Launch(tuple(argv) + args, env, upstream_model(spec))
    if kind == RuntimeKind.TRANSFORMERS:
        argv = [python, "-m", "transformers.cli.transformers", "serve", ref, "--host", host, "--port", str(port)]
        if not _has_flag(args, "--device"):
            argv += ["--device", "cuda" if gpu_ids else "cpu"]
        if not _has_flag(args, "--no-continuous-batching"):
            argv.append("--continuous-batching")
            argv += [x for flag, value in TRANSFORMERS_DEFAULTS if not _has_flag(args, flag) for x in (flag, value)]
        return Launch(tuple(argv) + args, env, upstream_model(spec))
    if kind in SERVED_NAME_RUNTIMES:
        module, model_flag = SERVED_NAME_RUNTIMES[RuntimeKind(kind)]
        served = f"{spec.name}-base" if spec.adapter else spec.name  # requests naming the deployment get the adapter
        argv = [python, "-m", module, model_flag, spec.model, "--served-model-name", served]
        argv += ["--host", host, "--port", str(port)]
        if spec.model_revision and not spec.model.startswith("/"):
            argv += ["--revision", spec.model_revision]
        if spec.adapter:
            argv += adapter_flags(spec, spec.adapter)
        return Launch(tuple(argv) + args, env, upstream_model(spec))
    if kind == RuntimeKind.CUSTOM and spec.local_command:
        values = {
            "{model}": spec.model_path or ref,
            "{model_id}": ref,
            "{host}": host,
            "{port}": str(port),
            "{name}": spec.name,
        }
        argv = []
        for part in spec.local_command:
            for key, value in values.items():
                part = part.replace(key, value)
            argv.append(part)
        return Launch(tuple(argv) + args, env, upstream_model(spec))
    raise RuntimeUnavailable(f"runtime {kind} cannot run as a local process", hint="deploy it on Kubernetes")


# In containers (Kubernetes) every runtime listens on this port and finds the model cache here (read-only).
CONTAINER_PORT = 8000
CONTAINER_MODELS_DIR = "/data/models"
CONTAINER_DATASETS_DIR = "/data/datasets"  # where training pods (and notebooks) see the datasets claim
# GPU runtimes get these unless the deployment's runtime args set them: use what the pool admitted, no more.
GPU_MEMORY_FRACTION = {
    RuntimeKind.VLLM: ("--gpu-memory-utilization", "0.90"),
    RuntimeKind.SGLANG: ("--mem-fraction-static", "0.85"),
}
TENSOR_PARALLEL_FLAG = {RuntimeKind.VLLM: "--tensor-parallel-size", RuntimeKind.SGLANG: "--tp-size"}


def container_model(spec: WorkloadSpec, models_dir: str, local_models_dir: Path | None) -> str:
    """The model as a container sees it: a Hub id stays an id (resolved in the mounted cache); a folder inside the
    studio's model cache is the same folder under the container's mount."""
    if spec.model.startswith("/") and local_models_dir is not None:
        folder = Path(spec.model)
        if folder.is_relative_to(local_models_dir):
            return f"{models_dir}/{folder.relative_to(local_models_dir).as_posix()}"
    return spec.model


def container_launch(spec: WorkloadSpec, *, local_models_dir: Path | None = None) -> Launch:
    """The command of one model-server container: the same runtime command as locally (``local_launch``), listening
    on all addresses at CONTAINER_PORT, reading the mounted cache offline; GPU runtimes are told how many GPUs the
    pod has (tensor parallelism) and what share of their memory to take. Custom images run their own entrypoint
    with the deployment's args (``argv`` is then empty)."""
    kind = spec.runtime
    if kind == RuntimeKind.CUSTOM:
        env = {"COVE_MODEL": spec.model, "COVE_SERVED_MODEL_NAME": spec.name, "PORT": str(CONTAINER_PORT)}
        return Launch((), env | {"HF_HUB_CACHE": CONTAINER_MODELS_DIR, "HF_HUB_OFFLINE": "1"}, upstream_model(spec))
    model = container_model(spec, CONTAINER_MODELS_DIR, local_models_dir)
    adapter = container_model(dataclasses.replace(spec, model=spec.adapter), CONTAINER_MODELS_DIR, local_models_dir)
    inside = dataclasses.replace(spec, model=model, local_command=None, adapter=adapter if spec.adapter else "")
    launch = local_launch(
        inside,
        host="0.0.0.0",  # the pod's own address: the Service and the gateway reach it there
        port=CONTAINER_PORT,
        python="python3",
        models_dir=Path(CONTAINER_MODELS_DIR),
        gpu_ids=tuple(range(spec.resources.gpu_devices)),
    )
    argv = list(launch.argv)
    if kind in GPU_MEMORY_FRACTION:
        flag, value = GPU_MEMORY_FRACTION[RuntimeKind(kind)]
        if not _has_flag(spec.args, flag):
            argv += [flag, value]
        tp = TENSOR_PARALLEL_FLAG[RuntimeKind(kind)]
        if spec.resources.gpus > 1 and not _has_flag(spec.args, tp):
            argv += [tp, str(spec.resources.gpus)]
    if kind in UPSTREAM_KEY_RUNTIMES:
        argv += ["--api-key", f"$({UPSTREAM_KEY_ENV})"]  # Kubernetes expands it from the container's environment
    env = {k: v for k, v in launch.env.items() if k != "CUDA_VISIBLE_DEVICES"}  # the device plugin sets it
    return Launch(tuple(argv), env, launch.upstream_model)
