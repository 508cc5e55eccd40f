"""Fake model servers, each named for the one behaviour it plays. They run as custom images' local commands
(``python tests/fakes/NAME.py --port {port}``) so the real local backend supervises them like any runtime."""

from pathlib import Path

FAKES = Path(__file__).parent
