"""A runtime that logs its KV cache as vLLM does once it has allocated it (the two lines of vLLM's
kv_cache_utils.py, as vllm-project/vllm#13596 shows them), then answers as ``scripted_runtime.py`` does."""

import runpy
from pathlib import Path

print("INFO 02-19 23:56:55 kv_cache_utils.py:524] GPU KV cache size: 2,042,016 tokens", flush=True)
print(
    "INFO 02-19 23:56:55 kv_cache_utils.py:527] Maximum concurrency for 2,048 tokens per request: 997.08x", flush=True
)
runpy.run_path(str(Path(__file__).with_name("scripted_runtime.py")), run_name="__main__")
