"""From `git clone` to the first chat answer: a fresh clone, `make up` as the README says, then one chat request
with the demo key `cove up` prints.

Prints when each step was reached, in seconds from the start: the install done (the venv's stamp), `cove up`'s
banner ("Cove is running"), and the demo model's first answer through the gateway. The package caches are whatever
the machine has (run benchmarks/install.py first for a warm uv cache); COVE_HOME and the ports are fresh, so the
demo model is built and deployed as on a first start.

    .venv/bin/python benchmarks/clone_to_chat.py
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def chat(base: str, key: str) -> str:
    body = {"model": "demo", "messages": [{"role": "user", "content": "What is Cove?"}], "temperature": 0}
    request = urllib.request.Request(
        f"{base}/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return str(json.loads(response.read())["choices"][0]["message"]["content"])


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="cove-clone-") as tmp:
        clone, home = Path(tmp) / "cove", Path(tmp) / "home"
        ports = {name: free_port() for name in ("PORT", "UI_PORT", "PLAYGROUND_PORT", "HUB_PORT", "HUB_API_PORT",
                                                 "HUB_PROXY_API_PORT")}  # fmt: skip
        env = (
            os.environ
            | {"COVE_HOME": str(home), "PYTHONUNBUFFERED": "1"}
            | {f"COVE_{name}": str(port) for name, port in ports.items()}
        )
        print(f"load average {os.getloadavg()[0]:.2f}; {os.cpu_count()} cores", flush=True)
        start = time.monotonic()
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        cloned = time.monotonic() - start
        up = subprocess.Popen(
            ["make", "up"], cwd=clone, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
        )  # fmt: skip
        lines: list[str] = []
        stamped: list[str] = []  # what `make up` printed, with when
        banner = threading.Event()
        installed: list[float] = []

        def read() -> None:
            assert up.stdout is not None
            for line in up.stdout:
                lines.append(line)
                stamped.append(f"{time.monotonic() - start:7.1f}  {line.rstrip()}")
                if not installed and "bin/cove up" in line:  # make echoes the command once the install is done
                    installed.append(time.monotonic() - start)
                if "demo API key" in line:
                    banner.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            if not banner.wait(timeout=900):
                raise SystemExit("no banner from `make up`:\n" + "".join(lines[-40:]))
            running = time.monotonic() - start
            key = re.search(r"demo API key\s+(\S+)", "".join(lines)).group(1)  # type: ignore[union-attr]
            answer = chat(f"http://127.0.0.1:{ports['PORT']}", key)
            answered = time.monotonic() - start
        finally:
            os.killpg(up.pid, signal.SIGINT)  # Ctrl-C, as a user stops it
            up.wait(timeout=120)
        print("\n".join(stamped[:60]))
        print(f"cloned           {cloned:6.1f} s")
        print(f"installed        {installed[0] if installed else float('nan'):6.1f} s  (make starts cove up)")
        print(f"Cove is running  {running:6.1f} s  (the banner, demo model Ready)")
        print(f"first answer     {answered:6.1f} s  {answer[:60]!r}")


if __name__ == "__main__":
    main()
