"""Crashes while loading: writes a few log lines and exits 1, like a runtime that runs out of memory."""

import sys

print("loading model weights …", flush=True)
print("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 GiB (simulated)", flush=True)
sys.exit(1)
