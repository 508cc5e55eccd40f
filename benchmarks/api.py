"""The Cove API's latency: listing 1,000 deployments, and creating one.

Serves the server's ASGI app (gateway, login and the API, as `cove server` does, without the controller so nothing
starts) with uvicorn in a child process over a temporary COVE_HOME on SQLite (or COVE_DATABASE_URL), with 1,000
deployments of a stub model made through the services, then times over real HTTP with a personal access token:
GET /api/v1/deployments?limit=1000 (the whole list in one page), ?limit=100 (a page), GET one deployment, and POST
a new deployment (each a fresh name). Prints p50 / p99 for each.

    .venv/bin/python benchmarks/api.py [--deployments 1000] [--runs 200]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from studio.bootstrap import open_studio  # noqa: E402
from studio.models import ApiKeyCreate, DeploymentCreate, ModelCreate  # noqa: E402
from studio.services import deployments, keys, models, users  # noqa: E402
from studio.settings import Settings  # noqa: E402
from studio.values import Resources  # noqa: E402
from tests.conftest import free_port  # noqa: E402

SERVE = """
import sys, uvicorn
from studio.api.app import build_api
from studio.bootstrap import open_studio
from studio.gateway.app import Gateway
from studio.login import Login
from studio.server import Server
from studio.settings import Settings
settings = Settings()
db = open_studio(settings)
app = Server(Gateway(settings=settings, db=db), Login(settings=settings, db=db), build_api(settings=settings, db=db))
uvicorn.run(app, host="127.0.0.1", port=settings.port, loop="uvloop", http="httptools", log_level="warning")
"""


def stub_model(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", 2) + b"{}")
    (folder / "tokenizer.json").write_text("{}")
    return folder


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return f"p50 {statistics.median(ordered):7.1f} ms   p99 {p99:7.1f} ms   (n={len(ordered)})"


def timed(call: object, runs: int) -> list[float]:
    samples = []
    for i in range(runs):
        start = time.perf_counter()
        response = call(i)  # type: ignore[operator]
        samples.append((time.perf_counter() - start) * 1000)
        response.raise_for_status()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deployments", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="cove-api-"))
    port = free_port()
    env = os.environ | {"COVE_HOME": str(home), "COVE_PORT": str(port), "COVE_DEMO": "false"}
    settings = Settings(home=home, port=port, database_url=os.environ.get("COVE_DATABASE_URL", ""))
    db = open_studio(settings)
    admin = users.first_admin(db=db)
    models.add_model(
        db=db, actor=admin, data=ModelCreate(name="stub", source=str(stub_model(home / "stub"))), cache_dir=home / "m"
    )
    start = time.perf_counter()
    for i in range(args.deployments):
        deployments.create_deployment(
            db=db,
            actor=admin,
            data=DeploymentCreate(name=f"d{i:04d}", model="stub", replicas=0, resources=Resources(cpu=0.1)),
        )
    print(f"made {args.deployments} deployments in {time.perf_counter() - start:.1f} s")
    token = keys.create_key(db=db, actor=admin, data=ApiKeyCreate(name="bench", scopes=["*"])).key
    db.dispose()

    server = subprocess.Popen([sys.executable, "-c", SERVE], env=env, cwd=ROOT)
    try:
        http = httpx.Client(base_url=f"http://127.0.0.1:{port}/api/v1", headers={"Authorization": f"Bearer {token}"})
        deadline = time.monotonic() + 60
        while True:
            try:
                if http.get("/whoami").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the server did not answer in 60 s")
            time.sleep(0.2)
        listed = http.get("/deployments", params={"limit": 1000}).json()
        assert listed["total"] == args.deployments, listed["total"]
        list_runs = max(20, args.runs // 4)
        print(f"load average before: {os.getloadavg()[0]:.2f}")
        print(
            "list 1,000 in one page  ",
            percentiles(timed(lambda _: http.get("/deployments", params={"limit": 1000}), list_runs)),
        )
        print(
            "list a page of 100      ",
            percentiles(
                timed(lambda i: http.get("/deployments", params={"offset": (i * 100) % 1000, "limit": 100}), args.runs)
            ),
        )
        print(
            "get one                 ",
            percentiles(timed(lambda i: http.get(f"/deployments/d{i % 1000:04d}"), args.runs)),
        )
        body = {"model": "stub", "replicas": 0, "resources": {"cpu": 0.1}}
        print(
            "create one              ",
            percentiles(timed(lambda i: http.post("/deployments", json={**body, "name": f"new{i:04d}"}), args.runs)),
        )
        print(f"load average after: {os.getloadavg()[0]:.2f}")
    finally:
        server.terminate()
        server.wait(timeout=20)


if __name__ == "__main__":
    main()
