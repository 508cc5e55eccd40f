"""Fine-tuning throughput: Cove's training process against a bare trl script, same data and settings, in one run.

Builds the demo model (not timed), optionally a wider random-weight model on its tokenizer (``--hidden``), writes
a chat dataset, then runs, one after the other in fresh processes: ``python -m studio.trainer plan.json`` (Cove's
trainer: its progress reports, divergence watch, checkpoints, evaluation, samples and merge around the same trl
loop) and a bare trl script (the same rows made into prompt/completion, the same SFTConfig: model, LoRA config,
steps, batch, max length, checkpoint interval, seed, fp32 as Cove trains on CPU: trl would pick bf16 itself,
about five times slower on this CPU). Both sides' speed is trl's own ``train_runtime`` (the
training loop alone); tokens are the non-padding tokens trained on. Prints tokens/s and steps/s for both and the
ratio (goal: Cove ≥ 0.9× bare).

    .venv/bin/python benchmarks/finetune.py [--steps 100] [--batch 8] [--hidden 0] [--runs 2] [--threads 1]

Then the click-to-registered-version time: the same job through a real `cove server`, from the API call to the new
model version in the catalog (``click_to_version``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from studio.demo import PAIRS, build_demo_model  # noqa: E402
from studio.finetuning import RESULT_FILE, Result  # noqa: E402

BARE = r"""
import json, sys, time
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer
import torch
from trl import SFTConfig, SFTTrainer

plan = json.load(open(sys.argv[1]))
s = plan["settings"]
rows = []
for path in plan["dataset"]["files"]["train"]:
    for line in open(path):
        messages = json.loads(line)["messages"]
        rows.append({"prompt": messages[:-1], "completion": messages[-1:]})
tokenizer = AutoTokenizer.from_pretrained(plan["base_path"])
model = AutoModelForCausalLM.from_pretrained(plan["base_path"], dtype=torch.float32)
config = SFTConfig(
    output_dir=sys.argv[2], learning_rate=s["learning_rate"], lr_scheduler_type="cosine", warmup_steps=0.03,
    max_steps=s["max_steps"], per_device_train_batch_size=s["batch_size"], gradient_accumulation_steps=1,
    max_length=s["max_length"], seed=s["seed"], data_seed=s["seed"], use_cpu=True, bf16=False, save_strategy="steps",
    save_steps=s["save_every"], save_total_limit=3, logging_steps=s["log_every"], report_to="none",
    disable_tqdm=True,
)
lora = LoraConfig(r=s["rank"], lora_alpha=s["alpha"], lora_dropout=0.05, target_modules="all-linear",
                  task_type="CAUSAL_LM")
trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                     peft_config=lora)
out = trainer.train()
tokens = max(int(h.get("num_tokens", 0)) for h in trainer.state.log_history)
print(json.dumps({"steps": trainer.state.global_step, "train_seconds": out.metrics["train_runtime"],
                  "tokens": tokens}))
"""


def write_data(folder: Path, repeat: int) -> Path:
    path = folder / "train.jsonl"
    with path.open("w") as out:
        for _ in range(repeat):
            for question, answer in PAIRS:
                messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
                out.write(json.dumps({"messages": messages}) + "\n")
    return path


def widen(demo: Path, out: Path, hidden: int, layers: int) -> Path:
    """A random-weight Llama of the given width on the demo's tokenizer (throughput only: it learns nothing)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    base = LlamaConfig.from_pretrained(demo)
    config = LlamaConfig(
        **{**base.to_dict(), "hidden_size": hidden, "intermediate_size": hidden * 2, "num_hidden_layers": layers}
    )
    LlamaForCausalLM(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(demo).save_pretrained(out)
    return out


def run(command: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout


def click_to_version(steps: int) -> None:
    """From the click (``POST /api/v1/finetunes``) to the registered model version, through a real `cove server`
    (its controller launching the trainer as a local task) on a fresh COVE_HOME: the demo model and its Q&A pairs
    as a dataset, ``steps`` steps. Prints each phase as the API showed it."""
    from cove.client import Client
    from studio.bootstrap import open_studio
    from studio.models import ApiKeyCreate
    from studio.services import keys, models, users
    from studio.settings import Settings

    home = Path(tempfile.mkdtemp(prefix="cove-finetune-"))
    port = _free_port()
    settings = Settings(home=home, port=port)
    db = open_studio(settings)
    admin = users.first_admin(db=db)
    models.register_built(
        db=db, actor=admin, name="demo-chat", folder=build_demo_model(home / "demo"), repo_id="cove/demo-chat",
        cache_dir=settings.models_dir,
    )  # fmt: skip
    token = keys.create_key(db=db, actor=admin, data=ApiKeyCreate(name="bench", scopes=["*"])).key
    db.dispose()
    env = {**os.environ, "COVE_HOME": str(home), "COVE_PORT": str(port), "COVE_DEMO": "false",
           "COVE_CONTROLLER_INTERVAL_S": "0.5"}  # fmt: skip
    server = subprocess.Popen([sys.executable, "-m", "studio.cli", "server"], env=env, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        client = Client(settings.gateway_url, token)
        deadline = time.monotonic() + 120
        while True:
            try:
                client.whoami()
                break
            except Exception:  # noqa: BLE001  (not answering yet)
                if time.monotonic() > deadline:
                    sys.exit("cove server did not answer in 120 s")
                time.sleep(0.2)
        client.datasets.upload("pairs", write_data(home, repeat=8))
        settings_ = {"max_steps": steps, "learning_rate": 5e-3, "max_length": 128, "save_every": steps}
        clicked = time.monotonic()
        client.finetunes.create("bench", "demo-chat", "pairs", resources={"cpu": 1, "memory_mib": 4096},
                                settings=settings_)  # fmt: skip
        seen: dict[str, float] = {}
        while True:
            job = client.finetunes.get("bench")
            phase = job.status.value if job.status.finished else str(job.progress.get("phase") or job.status.value)
            seen.setdefault(phase, time.monotonic() - clicked)
            if job.status.finished:
                break
            time.sleep(0.1)
        total = time.monotonic() - clicked
        if job.status.value != "Succeeded":
            sys.exit(f"the fine-tune {job.status.value}: {job.message}")
        print(f"click to registered version ({steps} steps, through cove server): {total:.1f} s (goal < 60 s)")
        print("  first seen at: " + ", ".join(f"{phase} {at:.1f} s" for phase, at in seen.items()))
        versions = [v.version for v in client.models.get("demo-chat").versions]  # ready for the one-click deploy
        print(f"  demo-chat versions: {versions}")
    finally:
        server.terminate()
        server.wait(timeout=60)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=0, help="0: the demo model; else a random Llama this wide")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--runs", type=int, default=2, help="runs of each side, alternated; the best is shown")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS for both sides")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = build_demo_model(work / "demo")
        if args.hidden:
            model = widen(model, work / "wide", args.hidden, args.layers)
        data = write_data(work, repeat=8)
        plan = {
            "job": "bench",
            "base_path": str(model),
            "base_name": "bench@1",
            "dataset": {"builder": "json", "files": {"train": [str(data)]}, "columns": {}, "format": "messages"},
            "settings": {
                "rank": 8,
                "alpha": 16,
                "learning_rate": 5e-3,
                "batch_size": args.batch,
                "grad_accum": 1,
                "max_length": args.max_length,
                "max_steps": args.steps,
                "save_every": max(1, args.steps // 2),
                "log_every": 5,
                "eval_fraction": 0,
                "seed": 42,
            },
            "output_dir": str(work / "cove"),
            "sample_prompts": [PAIRS[0][0]],
        }
        plan_path = work / "plan.json"
        plan_path.write_text(json.dumps(plan))
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(args.threads)}

        script = work / "bare.py"
        script.write_text(BARE)
        sides: dict[str, list[tuple[dict[str, float], float]]] = {"cove": [], "bare trl": []}
        for _ in range(args.runs):  # alternated, so a busy moment on the machine does not fall on one side only
            started = time.monotonic()
            run([sys.executable, "-m", "studio.trainer", str(plan_path)], env)
            wall = time.monotonic() - started
            m = Result.model_validate_json((work / "cove" / RESULT_FILE).read_text()).metrics
            sides["cove"].append(({"steps": m.steps, "train_seconds": m.train_seconds, "tokens": m.tokens}, wall))
            started = time.monotonic()
            out = run([sys.executable, str(script), str(plan_path), str(work / "bare")], env)
            sides["bare trl"].append((json.loads(out.splitlines()[-1]), time.monotonic() - started))

    params = "demo model" if not args.hidden else f"random Llama hidden {args.hidden} x {args.layers} layers"
    print(f"{params}; {args.steps} steps, batch {args.batch}, max_length {args.max_length}, LoRA r=8 all-linear")
    print(f"{'':8}{'tokens':>9}{'train s':>9}{'tokens/s':>10}{'steps/s':>9}{'wall s':>8}")
    rates = {}
    for name, runs in sides.items():
        got, wall = min(runs, key=lambda r: r[0]["train_seconds"])  # each side's best run
        tps = got["tokens"] / got["train_seconds"]
        sps = got["steps"] / got["train_seconds"]
        rates[name] = (tps, sps)
        print(f"{name:8}{got['tokens']:>9}{got['train_seconds']:>9.2f}{tps:>10.0f}{sps:>9.2f}{wall:>8.1f}")
    ratio_t = rates["cove"][0] / rates["bare trl"][0]
    ratio_s = rates["cove"][1] / rates["bare trl"][1]
    verdict = "meets" if min(ratio_t, ratio_s) >= 0.9 else "misses"
    print(f"cove / bare: {ratio_t:.2f}x tokens/s, {ratio_s:.2f}x steps/s ({verdict} the 0.9x goal)")
    click_to_version(args.steps)


if __name__ == "__main__":
    main()
