"""JupyterHub for Cove: one flat mapping from Cove's settings (COVE_* environment) to JupyterHub's traits.

Run by `cove hub` (and `cove up`) as ``jupyterhub -f hub/jupyterhub_config.py`` in COVE_HOME/hub.
"""

import sys
from pathlib import Path

from hub.spawner import LocalPoolSpawner, singleuser_args
from hub.tokens import service_token
from studio.settings import Settings

c = get_config()  # type: ignore[name-defined]  # noqa: F821  (JupyterHub provides it)
settings = Settings()
state = settings.hub_dir
state.mkdir(parents=True, exist_ok=True)
bindir = Path(sys.executable).parent  # absolute paths: the hub does not run from an activated venv

# ---- where it listens: the proxy is the public face; the hub's API and the proxy's API stay on loopback
c.JupyterHub.ip = settings.host
c.JupyterHub.port = settings.hub_port
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = settings.hub_api_port
c.JupyterHub.proxy_class = "configurable-http-proxy"
c.ConfigurableHTTPProxy.command = [str(bindir / "configurable-http-proxy")]  # the Python port: no Node needed
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{settings.hub_proxy_api_port}"
c.ConfigurableHTTPProxy.pid_file = str(state / "proxy.pid")

# ---- the hub's own state, kept apart from Cove's database
c.JupyterHub.db_url = f"sqlite:///{state / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(state / "cookie_secret")
c.JupyterHub.pid_file = str(state / "jupyterhub.pid")

# ---- who may log in (embedded mode: the built-in login; on Kubernetes, configure an OAuth authenticator)
c.JupyterHub.authenticator_class = "dummy"
if settings.hub_password:
    c.DummyAuthenticator.password = settings.hub_password
c.Authenticator.allow_all = True
c.Authenticator.admin_users = set(settings.hub_admin_users)

# ---- spawning: pool-aware JupyterLab processes; the profile form comes from the studio's pools
c.JupyterHub.spawner_class = LocalPoolSpawner
c.LocalPoolSpawner.cove_settings = settings
c.LocalPoolSpawner.retry_hint = (
    f"retry when a server stops; idle servers are stopped after {settings.hub_idle_timeout_s} s"
)
c.Spawner.cmd = [str(bindir / "jupyterhub-singleuser")]
c.Spawner.args = singleuser_args()
c.Spawner.environment = {"JUPYTERHUB_ACTIVITY_INTERVAL": str(settings.hub_activity_interval_s)}
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 60

# ---- reclaiming: the idle culler stops idle servers, and (with a max age) every server past its window.
# Activity is reported more often than the timeout, so a busy server is never mistaken for an idle one.
c.JupyterHub.last_activity_interval = settings.hub_activity_interval_s
culler = [sys.executable, "-m", "jupyterhub_idle_culler", f"--timeout={settings.hub_idle_timeout_s}"]
culler += [f"--cull-every={settings.hub_cull_every_s}", f"--max-age={settings.hub_max_age_s}"]
c.JupyterHub.services = [
    {"name": "idle-culler", "command": culler},
    {"name": "cove-studio", "api_token": service_token(settings)},  # the studio's Notebooks page
]
c.JupyterHub.load_roles = [
    {
        "name": "idle-culler",
        "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
        "services": ["idle-culler"],
    },
    {
        "name": "cove-studio",
        "scopes": ["admin:users", "admin:servers", "admin:groups", "list:users", "read:users", "tokens"],
        "services": ["cove-studio"],
    },
]
