"""The memory plan of a catalog version through the API (GET /api/v1/models/{name}/plan), the client and
`cove plan`: the version's config.json is read from its folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cove.client import Client
from studio.api.app import build_api
from studio.api.auth import trusting
from studio.cli import cli
from studio.db import Database
from studio.errors import InvalidSpec, NotFound
from studio.models import ModelCreate
from studio.services import models
from studio.settings import Settings
from tests.integration.conftest import cove_env, write_stub_model
from tests.people import ADMIN
from tests.unit.test_memplan import LLAMA3_8B


@pytest.fixture
def llama(db: Database, tmp_path: Path) -> str:
    """A catalog model with Llama-3-8B's config.json (and no weights: the plan reads only the config)."""
    folder = write_stub_model(tmp_path / "llama")
    (folder / "config.json").write_text(json.dumps(LLAMA3_8B | {"architectures": ["LlamaForCausalLM"]}))
    models.add_model(actor=ADMIN, db=db, data=ModelCreate(name="llama", source=str(folder)), cache_dir=tmp_path / "c")
    return "llama"


def test_the_api_plans_a_version_from_its_config(db: Database, settings: Settings, llama: str) -> None:
    with Client.in_process(build_api(settings=settings, db=db, identify=trusting(ADMIN))) as client:
        fits = client.models.plan(llama, gpu_memory_mib=80 * 1024, context=8192, concurrency=32)
        assert fits.fits
        assert fits.kv_bytes_per_token == 128 * 1024
        assert fits.flags[:4] == ["--max-model-len", "8192", "--max-num-seqs", "32"]

        slice_ = client.models.plan(llama, version=1, gpu_memory_mib=10 * 1024, context=4096)
        assert not slice_.fits
        assert "needs a GPU or slice of at least" in slice_.reason

        raw = client.request("GET", "/models/llama/plan", params={"gpu_memory_mib": 80 * 1024, "gpus": 3})
        assert raw.status_code == 200
        assert "3 GPUs cannot split the model's 32 attention heads" in raw.json()["reason"]

        with pytest.raises(NotFound, match="no version 7"):
            client.models.plan(llama, version=7, gpu_memory_mib=1024)
        with pytest.raises(InvalidSpec):
            client.request("GET", "/models/llama/plan", params={"gpu_memory_mib": 0})


def test_cove_plan_prints_the_plan_and_exits_1_when_it_does_not_fit(settings: Settings, llama: str) -> None:
    env = {k: v for k, v in cove_env(settings).items() if k.startswith(("COVE_", "HF_"))}

    fits = CliRunner().invoke(cli, ["plan", "llama:1", "--gpu-memory-mib", "81920", "--context", "8192"], env=env)
    assert fits.exit_code == 0, fits.output
    assert "concurrency  55 requests of 8,192 tokens" in fits.output
    assert "weights      15,316 MiB per GPU (bf16)" in fits.output
    assert "fits         --max-model-len 8192 --max-num-seqs 55 --gpu-memory-utilization 0.9" in fits.output

    refused = CliRunner().invoke(
        cli, ["plan", "llama", "--gpu-memory-mib", "24576", "--concurrency", "16", "--runtime", "sglang"], env=env
    )
    assert refused.exit_code == 1
    assert "does not fit: 16 requests of 8192 tokens need" in refused.output

    as_json = CliRunner().invoke(cli, ["plan", "llama", "--gpu-memory-mib", "81920", "--gpus", "2", "--json"], env=env)
    assert json.loads(as_json.output)["flags"][-2:] == ["--tensor-parallel-size", "2"]
