"""JupyterHub for Cove: one flat mapping from Cove's settings (COVE_* environment) to JupyterHub's traits.

Run by `cove hub` (and `cove up`) as ``jupyterhub -f hub/jupyterhub_config.py`` in COVE_HOME/hub.
"""

import sys
from pathlib import Path

from hub.auth import CoveAuthenticator
from hub.spawner import KubePoolSpawner, LocalPoolSpawner, singleuser_args
from studio.hub_client import service_token
from studio.pods import restricted_container_context, restricted_pod_context
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

# ---- who may log in: Cove's users, as Cove knows them (hub/auth.py): its session cookie (single sign-on) or a name
# and password checked against Cove's; admins are Cove's admins, groups are Cove's groups (they select pools). With
# COVE_LOGIN off (loopback only) every visitor is the first admin, as in the other faces.
c.JupyterHub.authenticator_class = CoveAuthenticator
c.CoveAuthenticator.cove_settings = settings
c.JupyterHub.cookie_max_age_days = settings.session_hours / 24  # a hub login lasts no longer than a Cove one

# ---- spawning: the profile form comes from the studio's pools; a server is admitted against its pool first
c.Spawner.environment = {"JUPYTERHUB_ACTIVITY_INTERVAL": str(settings.hub_activity_interval_s)}
# The spawners add COVE_API_URL, so `cove.Client()` in a notebook calls Cove's API with the server's own token
# (JUPYTERHUB_API_TOKEN). The default server token scopes suffice: every token may identify its owner at
# /hub/api/user, which is how Cove's server learns whose the token is (studio/api/auth.py HubTokens).
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 60
retry_hint = f"retry when a server stops; idle servers are stopped after {settings.hub_idle_timeout_s} s"

if settings.hub_spawner == "local":  # JupyterLab processes on this machine, run from Cove's environment
    c.JupyterHub.spawner_class = LocalPoolSpawner
    c.LocalPoolSpawner.cove_settings = settings
    c.LocalPoolSpawner.retry_hint = retry_hint
    c.Spawner.cmd = [str(bindir / "jupyterhub-singleuser")]
    c.Spawner.args = singleuser_args()
else:  # a pod per server (KubeSpawner), sized and placed by its profile
    uid, gid = 1000, 100  # the notebook image's user (jovyan) and group (users)
    c.JupyterHub.spawner_class = KubePoolSpawner
    c.JupyterHub.hub_ip = "0.0.0.0"  # pods call the hub's API through its Service
    c.JupyterHub.hub_connect_ip = settings.hub_connect_host
    c.KubePoolSpawner.cove_settings = settings
    c.KubePoolSpawner.retry_hint = retry_hint
    c.KubeSpawner.namespace = settings.kube_namespace
    c.KubeSpawner.image = settings.notebook_image
    c.KubeSpawner.cmd = ["jupyterhub-singleuser"]
    c.KubeSpawner.args = singleuser_args(allow_root=False)
    c.KubeSpawner.uid, c.KubeSpawner.gid, c.KubeSpawner.fs_gid = uid, gid, gid
    c.KubeSpawner.pod_security_context = restricted_pod_context(uid=uid, gid=gid)
    c.KubeSpawner.container_security_context = restricted_container_context()
    c.KubeSpawner.automount_service_account_token = False
    # home: one volume per server, kept when the server stops; data: the shared caches, read-only
    c.KubeSpawner.storage_pvc_ensure = True
    c.KubeSpawner.pvc_name_template = "home-{user_server}"
    c.KubeSpawner.storage_capacity = settings.notebook_home_size
    c.KubeSpawner.storage_class = settings.notebook_storage_class or None
    c.KubeSpawner.storage_access_modes = ["ReadWriteOnce"]
    data = KubePoolSpawner.DATA
    c.KubeSpawner.volumes = [
        {"name": "home", "persistentVolumeClaim": {"claimName": "home-{user_server}"}},
        {"name": "models", "persistentVolumeClaim": {"claimName": settings.models_pvc, "readOnly": True}},
        {"name": "datasets", "persistentVolumeClaim": {"claimName": settings.datasets_pvc, "readOnly": True}},
    ]
    c.KubeSpawner.volume_mounts = [
        {"name": "home", "mountPath": "/home/jovyan"},
        {"name": "models", "mountPath": f"{data}/models", "readOnly": True},
        {"name": "datasets", "mountPath": f"{data}/datasets", "readOnly": True},
    ]

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

# ---- last, a deployment's own JupyterHub config (an OAuth authenticator, say) may override any of the above
if settings.hub_extra_config:
    load_subconfig(str(settings.hub_extra_config))  # type: ignore[name-defined]  # noqa: F821
