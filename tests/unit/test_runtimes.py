"""How each runtime kind is started locally: command lines, environment, and why a kind cannot run here."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import pytest

from studio import runtimes
from studio.backends.base import WorkloadSpec
from studio.errors import RuntimeUnavailable
from studio.runtimes import (
    Launch,
    container_launch,
    is_embedding_architecture,
    local_availability,
    local_launch,
    upstream_key,
    upstream_model,
)
from studio.values import Resources, RuntimeKind

PY = "/srv/cove/.venv/bin/python"
MODELS = Path("/srv/cove/models")
REPO, REV = "Qwen/Qwen2.5-0.5B-Instruct", "7ae557604adf67be50417f59c2c2f167def9a775"
TRANSFORMERS = WorkloadSpec(
    name="chat",
    runtime=RuntimeKind.TRANSFORMERS,
    model=REPO,
    model_revision=REV,
    image="ghcr.io/cove/transformers:5.23.0",
    resources=Resources(cpu=2.5, memory_mib=4096),
)
SERVE = (PY, "-m", "transformers.cli.transformers", "serve")
HOST_PORT = ("--host", "127.0.0.1", "--port", "41001")
CB_DEFAULTS = ("--continuous-batching", "--cb-num-blocks", "512", "--cb-block-size", "32")


def env(cuda: str = "", threads: str = "2") -> dict[str, str]:
    return {
        "HF_HUB_CACHE": "/srv/cove/models",
        "HF_HUB_OFFLINE": "1",
        "CUDA_VISIBLE_DEVICES": cuda,
        "OMP_NUM_THREADS": threads,
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONUNBUFFERED": "1",
    }


def launch(spec: WorkloadSpec, gpu_ids: tuple[int, ...] = ()) -> Launch:
    return local_launch(spec, host="127.0.0.1", port=41001, python=PY, models_dir=MODELS, gpu_ids=gpu_ids)


def with_(spec: WorkloadSpec, **changes: object) -> WorkloadSpec:
    return dataclasses.replace(spec, **changes)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ transformers


@pytest.mark.parametrize(
    ("architecture", "embeds"),
    [
        ("BertModel", True),
        ("XLMRobertaModel", True),
        ("MPNetModel", True),
        ("NomicBertModel", True),
        ("LlamaForCausalLM", False),
        ("BertForSequenceClassification", False),
        ("GPT2LMHeadModel", False),
        ("T5ForConditionalGeneration", False),
        ("", False),
    ],
)
def test_an_encoder_without_a_head_is_an_embedding_model(architecture: str, embeds: bool) -> None:
    assert is_embedding_architecture(architecture) is embeds


def test_an_embedding_model_on_the_transformers_runtime_runs_coves_embedder_under_the_deployment_s_name() -> None:
    encoder = with_(TRANSFORMERS, name="embed", embeds=True, args=("--device", "cuda"))  # the user's, last: it wins
    ref = f"{REPO}@{REV}"
    served = ("--served-model-name", "embed")

    assert launch(encoder) == Launch(
        (PY, "-m", "studio.embedder", ref, *served, *HOST_PORT, "--device", "cpu", "--device", "cuda"), env(), "embed"
    )
    assert launch(encoder, gpu_ids=(1,)).argv[10:12] == ("--device", "cuda")
    inside = container_launch(encoder)
    assert inside.argv[:4] == ("python3", "-m", "studio.embedder", ref)  # Cove's own image carries the embedder
    assert inside.upstream_model == "embed"


def test_transformers_on_cpu_pins_the_revision_and_adds_the_defaults() -> None:
    ref = f"{REPO}@{REV}"

    assert launch(TRANSFORMERS) == Launch((*SERVE, ref, *HOST_PORT, "--device", "cpu", *CB_DEFAULTS), env(), ref)


def test_transformers_on_gpus_uses_cuda_and_shows_only_its_gpus() -> None:
    got = launch(TRANSFORMERS, gpu_ids=(0, 2))

    assert got.argv[9:11] == ("--device", "cuda")
    assert got.env == env(cuda="0,2")


def test_transformers_user_flags_come_last_and_replace_the_defaults_they_name() -> None:
    spec = with_(TRANSFORMERS, args=("--cb-num-blocks", "2048", "--device=cpu", "--max-new-tokens", "64"))

    got = launch(spec, gpu_ids=(0,))

    assert got.argv == (
        *SERVE,
        f"{REPO}@{REV}",
        *HOST_PORT,
        "--continuous-batching",
        "--cb-block-size",
        "32",
        "--cb-num-blocks",
        "2048",
        "--device=cpu",
        "--max-new-tokens",
        "64",
    )


def test_transformers_without_continuous_batching_gets_no_batching_flags() -> None:
    spec = with_(TRANSFORMERS, args=("--no-continuous-batching",))

    got = launch(spec)

    assert got.argv == (*SERVE, f"{REPO}@{REV}", *HOST_PORT, "--device", "cpu", "--no-continuous-batching")


def test_a_model_folder_is_loaded_as_it_is_without_a_revision() -> None:
    spec = with_(TRANSFORMERS, model="/srv/cove/models/demo", model_revision="abc")

    got = launch(spec)

    assert got.argv[4] == "/srv/cove/models/demo"
    assert got.upstream_model == "/srv/cove/models/demo"


def test_a_hub_model_without_revision_is_loaded_by_its_repo_id() -> None:
    assert launch(with_(TRANSFORMERS, model_revision=None)).upstream_model == REPO


@pytest.mark.parametrize(("cores", "threads"), [(0.5, "1"), (1, "1"), (2.9, "2"), (16, "16")])
def test_omp_threads_follow_the_whole_cpu_cores_asked_for(cores: float, threads: str) -> None:
    got = launch(with_(TRANSFORMERS, resources=Resources(cpu=cores)))

    assert got.env["OMP_NUM_THREADS"] == threads


# ------------------------------------------------------------------------------------------------ vllm, sglang


def test_vllm_serves_the_deployment_name_with_a_pinned_revision() -> None:
    spec = with_(TRANSFORMERS, runtime=RuntimeKind.VLLM, args=("--max-model-len", "8192"), resources=Resources(gpus=1))

    got = launch(spec, gpu_ids=(1,))

    assert got == Launch(
        (
            PY,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            REPO,
            "--served-model-name",
            "chat",
            *HOST_PORT,
            "--revision",
            REV,
            "--max-model-len",
            "8192",
        ),
        env(cuda="1", threads="1"),
        "chat",
    )


def test_vllm_serves_an_adapter_version_on_its_base_under_the_deployment_s_name() -> None:
    adapter = "/srv/cove/models/models--cove-finetunes--chat-adapter/snapshots/abc"
    spec = with_(TRANSFORMERS, runtime=RuntimeKind.VLLM, resources=Resources(gpus=1), adapter=adapter, adapter_rank=16)

    got = launch(spec, gpu_ids=(0,))

    assert got.argv[got.argv.index("--served-model-name") + 1] == "chat-base"  # the base keeps another name
    assert got.argv[-5:] == ("--enable-lora", "--lora-modules", f"chat={adapter}", "--max-lora-rank", "16")
    assert got.upstream_model == "chat"  # requests naming the deployment get the adapter
    inside = runtimes.container_launch(spec, local_models_dir=MODELS)
    assert "chat=/data/models/models--cove-finetunes--chat-adapter/snapshots/abc" in inside.argv


def test_only_vllm_serves_adapters() -> None:
    spec = with_(TRANSFORMERS, runtime=RuntimeKind.SGLANG, resources=Resources(gpus=1), adapter="/srv/a")

    with pytest.raises(RuntimeUnavailable, match="cannot serve a LoRA adapter"):
        launch(spec, gpu_ids=(0,))


def test_sglang_serves_the_deployment_name_with_a_pinned_revision() -> None:
    spec = with_(TRANSFORMERS, runtime="sglang", resources=Resources(gpus=2))

    got = launch(spec, gpu_ids=(0, 1))

    assert got == Launch(
        (
            PY,
            "-m",
            "sglang.launch_server",
            "--model-path",
            REPO,
            "--served-model-name",
            "chat",
            *HOST_PORT,
            "--revision",
            REV,
        ),
        env(cuda="0,1", threads="1"),
        "chat",
    )


@pytest.mark.parametrize("kind", [RuntimeKind.VLLM, RuntimeKind.SGLANG])
def test_vllm_and_sglang_load_a_folder_without_a_revision_flag(kind: RuntimeKind) -> None:
    got = launch(with_(TRANSFORMERS, runtime=kind, model="/srv/cove/models/demo", model_revision="abc"))

    assert "--revision" not in got.argv
    assert "/srv/cove/models/demo" in got.argv


# ------------------------------------------------------------------------------------------------ custom, others


def test_a_custom_command_gets_its_placeholders_filled_and_the_user_flags_after() -> None:
    spec = WorkloadSpec(
        name="my-chat",
        runtime="custom",
        model="/srv/cove/models/demo",
        model_revision=None,
        image="registry.example.com/my-rt:1.0",
        local_command=("my-server", "--model", "{model}", "--bind={host}:{port}", "--name", "{name}"),
        args=("--verbose",),
    )

    got = launch(spec)

    assert got == Launch(
        (
            "my-server",
            "--model",
            "/srv/cove/models/demo",
            "--bind=127.0.0.1:41001",
            "--name",
            "my-chat",
            "--verbose",
        ),
        env(threads="1"),
        "my-chat",
    )


def test_a_custom_command_loads_a_hub_model_from_its_folder_and_can_name_its_hub_id() -> None:
    folder = f"/srv/cove/models/models--Qwen--Qwen2.5-0.5B-Instruct/snapshots/{REV}"
    spec = with_(
        TRANSFORMERS,
        runtime="custom",
        model_path=folder,
        local_command=("srv", "{model}", "--id", "{model_id}", "--port", "{port}"),
    )

    assert launch(spec).argv == ("srv", folder, "--id", f"{REPO}@{REV}", "--port", "41001")


@pytest.mark.parametrize(
    ("runtime", "command"), [("triton", None), ("custom", None)], ids=["triton", "custom-without-command"]
)
def test_kinds_that_cannot_run_as_a_process_raise_runtime_unavailable(runtime: str, command: None) -> None:
    spec = with_(TRANSFORMERS, runtime=runtime, local_command=command)

    with pytest.raises(RuntimeUnavailable) as raised:
        launch(spec)

    assert str(raised.value) == f"runtime {runtime} cannot run as a local process (deploy it on Kubernetes)"


# ------------------------------------------------------------------------------------------------ availability


def test_vllm_and_sglang_are_not_installed_in_this_environment() -> None:
    # the next tests rely on it; if this fails, they test the wrong branch
    assert importlib.util.find_spec("vllm") is None
    assert importlib.util.find_spec("sglang") is None


@pytest.mark.parametrize(("kind", "name"), [("vllm", "vllm"), (RuntimeKind.VLLM, "vllm"), ("sglang", "sglang")])
def test_vllm_and_sglang_without_their_package_say_what_to_use_instead(kind: str, name: str) -> None:
    spec = with_(TRANSFORMERS, runtime=kind, resources=Resources(gpus=1))

    assert local_availability(spec, gpus_on_machine=1) == (
        f"runtime {name} is not available here: the {name} package is not installed; "
        "use the transformers image on CPU, or deploy to a GPU pool on Kubernetes"
    )


@pytest.mark.parametrize(
    ("gpus_on_machine", "resources", "message"),
    [
        (0, Resources(gpus=1), "runtime vllm is not available here: it needs an NVIDIA GPU and this machine has none"),
        (
            2,
            Resources(),
            "runtime vllm is not available here: it needs an NVIDIA GPU and the deployment asks for none",
        ),
        (2, Resources(gpus=1), ""),
        (1, Resources(gpu_memory_mib=4096), ""),
    ],
    ids=["no-gpu-here", "asks-none", "whole", "slice"],
)
def test_installed_vllm_needs_a_gpu_here_and_in_the_request(
    monkeypatch: pytest.MonkeyPatch, gpus_on_machine: int, resources: Resources, message: str
) -> None:
    monkeypatch.setattr(runtimes, "_python_runtime", lambda module: True)
    spec = with_(TRANSFORMERS, runtime="vllm", resources=resources)

    assert local_availability(spec, gpus_on_machine=gpus_on_machine) == message


def test_a_custom_image_without_a_local_command_runs_only_on_kubernetes() -> None:
    spec = with_(TRANSFORMERS, runtime="custom", image="registry.example.com/my-rt:1.0")

    assert local_availability(spec, gpus_on_machine=0) == (
        "image registry.example.com/my-rt:1.0 has no local command, so it runs only on Kubernetes; "
        "register the image with a local command to run it here"
    )
    assert local_availability(with_(spec, local_command=("srv", "{port}")), gpus_on_machine=0) == ""


def test_transformers_runs_here_and_triton_does_not() -> None:
    assert local_availability(TRANSFORMERS, gpus_on_machine=0) == ""
    assert local_availability(with_(TRANSFORMERS, runtime="triton"), gpus_on_machine=4) == (
        "runtime triton does not run as a local process; deploy it on Kubernetes"
    )


# ------------------------------------------------------------------------------------------------ small helpers


@pytest.mark.parametrize(
    ("runtime", "model", "expected"),
    [
        ("transformers", REPO, f"{REPO}@{REV}"),
        ("transformers", "/srv/cove/models/demo", "/srv/cove/models/demo"),
        ("vllm", REPO, "chat"),
        ("sglang", REPO, "chat"),
        ("custom", REPO, "chat"),
    ],
)
def test_upstream_model_is_what_requests_to_the_runtime_must_name(runtime: str, model: str, expected: str) -> None:
    assert upstream_model(with_(TRANSFORMERS, runtime=runtime, model=model)) == expected


def test_each_deployment_has_its_own_upstream_key_known_only_to_holders_of_the_studio_key() -> None:
    chat = upstream_key("studio key", "chat")
    assert chat == upstream_key("studio key", "chat")  # the gateway and the backend agree without storing it
    assert len(chat) == 64
    assert chat != upstream_key("studio key", "embed")
    assert chat != upstream_key("another studio", "chat")
