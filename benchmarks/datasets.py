"""Validation and token-length histogram of 100k chat rows: time and peak memory (goal: under 30 s, under 1 GiB).

Writes a JSONL file of ``--rows`` chats in OpenAI ``messages`` (a system turn in a third of them, one to three
exchanges, answers of 5 to ``--answer-words`` words, a bad line in a thousand), builds the demo model for its
tokenizer and chat template (or takes ``--model FOLDER``), then in a child process of its own (so its peak memory
is the work's, not this script's) validates the file as adding a dataset does (``datastore.check``) and measures
its token lengths against the template (``renderer.measure``, max_length 256). Prints each step's time, the total,
and the child's peak RSS.

    .venv/bin/python benchmarks/datasets.py [--rows 100000] [--model FOLDER]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHILD = """
import json, resource, sys, time
from pathlib import Path
from studio import datastore, renderer

source, model = Path(sys.argv[1]), Path(sys.argv[2])
files = {"train": [source.name]}
started = time.perf_counter()
checked = datastore.check(source.parent, files, "json", fmt=None, columns=None)
validated = time.perf_counter()
chat = renderer.ChatRenderer(model)
loaded = time.perf_counter()
stats = renderer.measure(chat, source.parent, files, "json", checked.columns, max_length=256)
measured = time.perf_counter()
print(json.dumps({
    "validate_s": validated - started,
    "tokenizer_s": loaded - validated,
    "lengths_s": measured - loaded,
    "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "summary": checked.report["splits"]["train"]["summary"],
    "stats": stats.model_dump(exclude={"bins"}),
    "bins": len(stats.bins),
}))
"""

WORDS = [
    "the",
    "sea",
    "tells",
    "a",
    "story",
    "of",
    "ships",
    "and",
    "storms",
    "quiet",
    "harbours",
    "under",
    "pale",
    "sky",
]


def sentence(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high))).capitalize() + "."


def write_rows(path: Path, rows: int, *, answer_words: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with path.open("w") as fh:
        for i in range(rows):
            if i % 997 == 0:
                fh.write("{a line that is not JSON\n")
                continue
            turns = [{"role": "system", "content": "You are a helpful sailor."}] if i % 3 == 0 else []
            for _ in range(rng.randint(1, 3)):
                turns.append({"role": "user", "content": f"Question {i}: " + sentence(rng, 4, 20)})
                turns.append({"role": "assistant", "content": sentence(rng, 5, answer_words)})
            fh.write(json.dumps({"messages": turns}) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--answer-words", type=int, default=60, help="The longest answer, in words (from 5)")
    parser.add_argument("--model", type=Path, help="A model folder with a tokenizer and chat template (default: demo)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cove-bench-datasets-") as tmp:
        folder = Path(tmp)
        model = args.model
        if model is None:
            from studio.demo import build_demo_model

            print("building the demo model for its tokenizer and chat template …", flush=True)
            model = build_demo_model(folder / "demo-chat")
        source = folder / "data" / "train.jsonl"
        source.parent.mkdir()
        write_rows(source, args.rows, answer_words=args.answer_words)
        print(f"{args.rows:,} rows, {source.stat().st_size / 2**20:.1f} MiB of JSONL", flush=True)
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(source), str(model)],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
        )
        got = json.loads(done.stdout.strip().splitlines()[-1])
    s = got["stats"]
    total = got["validate_s"] + got["tokenizer_s"] + got["lengths_s"]
    print(f"validation:      {got['validate_s']:6.1f} s   ({got['summary']})")
    print(f"tokenizer load:  {got['tokenizer_s']:6.1f} s")
    print(
        f"token lengths:   {got['lengths_s']:6.1f} s   ({s['rows']:,} rows: P50 {s['p50']} P95 {s['p95']}"
        f" P99 {s['p99']} max {s['max']}; {s['truncated']:,} truncated and {s['untrainable']:,} untrainable"
        f" at {s['max_length']},"
        f" {s['dropped']:,} dropped; {got['bins']} bins)"
    )
    print(f"total:           {total:6.1f} s   (goal: under 30 s)")
    print(f"load average:    {os.getloadavg()[0]:6.1f}     (on {os.cpu_count()} cores: other work slows the tokenizer)")
    print(f"peak RSS:        {got['peak_rss_mib']:6.0f} MiB (goal: under 1024 MiB)")


if __name__ == "__main__":
    main()
