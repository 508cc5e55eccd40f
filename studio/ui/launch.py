"""How the studio UI process is started: Streamlit running ``app.py`` on the settings' host and UI port."""

from __future__ import annotations

import sys
from pathlib import Path

from studio.settings import Settings

APP = Path(__file__).with_name("app.py")


def streamlit_argv(settings: Settings) -> list[str]:
    """The command line of the UI process. Headless, no usage statistics, no file watching (nothing is edited in
    place in production, and the watcher costs a thread per file)."""
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP),
        "--server.address",
        settings.host,
        "--server.port",
        str(settings.ui_port),
        "--server.headless",
        "true",
        "--server.fileWatcherType",
        "none",
        "--browser.gatherUsageStats",
        "false",
        "--global.developmentMode",
        "false",
        "--client.toolbarMode",
        "viewer",
    ]
