"""Pool-aware spawning: a notebook server is started only when its profile fits in its pool, and its claim on the
pool is held until it stops (or is culled), so notebooks and deployments never overcommit the same capacity.

``PoolSpawnerMixin`` holds the shared part (who the user is in Cove, profiles for their Cove groups, admission
through ``studio.services.notebooks``, the data paths); ``LocalPoolSpawner`` runs real JupyterLab processes on this
machine, ``KubePoolSpawner`` runs pods sized and placed by the profile (KubeSpawner).

Only Cove's users start servers: a hub user who is not an enabled Cove user (removed, disabled, or a name the hub's
API made up) is refused, whoever asks. Isolation: a pod mounts only its own home volume and the read-only data; a
local server runs as Cove's own OS user and could read Cove's database and secret key, so on one machine only the
first admin (the person who runs Cove) may start one, unless ``LocalPoolSpawner.trust_all_users`` says otherwise.
"""

from __future__ import annotations

import asyncio
import html
import os
import pwd
from typing import Any

from jupyterhub.spawner import SimpleLocalProcessSpawner
from kubespawner import KubeSpawner
from tornado import web
from traitlets import Any as AnyTrait
from traitlets import Bool, Unicode, default
from traitlets.config import LoggingConfigurable

from hub.database import studio_database
from studio.db import Database
from studio.errors import CoveError, Unauthorized
from studio.pods import gpu_annotations, gpu_limits, pending_reason
from studio.profiles import Profile, profiles_for
from studio.services import notebooks, pools, users
from studio.settings import Settings
from studio.values import Principal


def kubespawner_traits(profile: Profile) -> dict[str, Any]:
    """KubeSpawner's traits for a server of this profile: what its pool admitted (CPU and memory requested and
    capped alike, whole GPUs or a HAMi slice) and where the pool's nodes are."""
    resources = profile.resources
    memory = f"{resources.memory_mib}M"  # JupyterHub's byte units are binary: M is MiB
    annotations = gpu_annotations(resources)  # a slice asks HAMi to bin-pack it, as admission places it
    return {
        **({"extra_annotations": annotations} if annotations else {}),
        "cpu_guarantee": resources.cpu,
        "cpu_limit": resources.cpu,
        "mem_guarantee": memory,
        "mem_limit": memory,
        "extra_resource_limits": gpu_limits(resources),
        "node_selector": dict(profile.node_selector),
        "tolerations": [dict(t) for t in profile.tolerations],
    }


class PoolSpawnerMixin(LoggingConfigurable):
    """Profiles from the studio's pools, admission before start, release after stop. Put it before the concrete
    spawner's class (``class X(PoolSpawnerMixin, KubeSpawner)``)."""

    cove_settings = AnyTrait(help="Cove's Settings (set by hub/jupyterhub_config.py).").tag(config=True)
    retry_hint = Unicode("", help="Added to a refusal: when capacity comes back.").tag(config=True)

    # what the spawner this is mixed into provides
    user: Any
    name: str
    user_options: dict[str, Any]
    environment: dict[str, str]

    @property
    def settings(self) -> Settings:
        return self.cove_settings or Settings()

    def data_dirs(self) -> tuple[str, str]:
        """Where a server finds the model cache and the datasets (read-only)."""
        return str(self.settings.models_dir), str(self.settings.datasets_dir)

    def _db(self) -> Database:
        return studio_database(self.settings)

    def principal(self) -> Principal:
        """The hub user as Cove knows them now; HTTP 403 when they are not an enabled Cove user."""
        try:
            return users.principal(db=self._db(), name=self.user.name)
        except Unauthorized as exc:
            raise web.HTTPError(403, f"only Cove's users start notebook servers: {exc.message} ({exc.hint})") from exc

    def refusal(self, who: Principal) -> str | None:
        """Why ``who`` may not start a server here at all (whatever the pool), or None. Spawners add their rules."""
        return None

    def profiles(self, who: Principal | None = None) -> list[Profile]:
        """The profiles ``who`` (the user by default) may start: pools open to all or to one of their Cove groups;
        every pool for an admin, as for deployments (``studio.access.may_use_pool``)."""
        who = who or self.principal()
        usage = pools.list_pools(db=self._db())
        groups = {g for u in usage for g in u.pool.groups} if who.is_admin else who.groups
        return profiles_for([(u.pool, u.free) for u in usage], groups)

    def _options_form(self, _spawner: Any) -> str:
        try:
            who = self.principal()
        except web.HTTPError as exc:
            return f"<p>{html.escape(str(exc.log_message))}</p>"
        reason = self.refusal(who)
        if reason:
            return f"<p>{html.escape(reason)}</p>"
        choices = "".join(
            f'<option value="{html.escape(p.slug)}">{html.escape(p.display_name)} — {html.escape(p.description)}'
            "</option>"
            for p in self.profiles(who)
        )
        if not choices:
            return "<p>No pool serves notebooks for your groups. Ask an administrator for access.</p>"
        return f'<label for="profile">Profile</label><select name="profile" class="form-control">{choices}</select>'

    def options_from_form(self, formdata: dict[str, list[str]]) -> dict[str, Any]:
        return {"profile": (formdata.get("profile") or [""])[0]}

    def chosen_profile(self) -> Profile:
        """The profile in ``user_options`` (the first the user may start when none is named), once the user may
        start a server here at all (HTTP 403 otherwise)."""
        who = self.principal()
        reason = self.refusal(who)
        if reason:
            raise web.HTTPError(403, reason)
        offered = self.profiles(who)
        wanted = (self.user_options or {}).get("profile") or ""
        if not offered:
            raise web.HTTPError(403, "no pool serves notebooks for your groups; ask an administrator for access")
        if not wanted:
            return offered[0]
        found = next((p for p in offered if p.slug == wanted), None)
        if found is None:
            names = ", ".join(p.slug for p in offered)
            raise web.HTTPError(400, f"unknown profile {wanted!r}; you may start: {names}")
        return found

    async def claim(self) -> Profile:
        """Admit the chosen profile against its pool, or refuse with what is free and when to retry (HTTP 409)."""
        profile = self.chosen_profile()
        try:
            await asyncio.to_thread(
                notebooks.claim_notebook,
                db=self._db(),
                user=self.user.name,
                server=self.name,
                pool=profile.pool,
                profile=profile.slug,
                resources=profile.resources,
                retry_hint=self.retry_hint,
            )
        except CoveError as exc:
            raise web.HTTPError(409, f"{exc.message}. {exc.hint}") from exc
        models, datasets = self.data_dirs()
        self.environment.update(
            {
                "COVE_POOL": profile.pool,
                "COVE_PROFILE": profile.slug,
                "COVE_MODELS_DIR": models,
                "COVE_DATASETS_DIR": datasets,
                "HF_HUB_CACHE": models,
                "COVE_GATEWAY_URL": self.settings.gateway_url,
                # cove.Client() finds the API here and acts as the notebook's user with the hub's token for them
                # (JUPYTERHUB_API_TOKEN), which the server checks with the hub; API and gateway share one server
                "COVE_API_URL": self.settings.gateway_url,
            }
        )
        return profile

    async def release(self) -> None:
        await asyncio.to_thread(notebooks.release_notebook, db=self._db(), user=self.user.name, server=self.name)

    @default("options_form")
    def _default_options_form(self) -> Any:
        return self._options_form

    async def stop(self, now: bool = False) -> None:
        """Stop the server, then give its capacity back (whatever the stop raised)."""
        try:
            await super().stop(now=now)  # type: ignore[misc]  # the spawner this is mixed into
        finally:
            await self.release()


def embedded_refusal(*, user: str, owner: str, os_user: str, trust_all_users: bool) -> str | None:
    """Why ``user`` may not start a notebook server on Cove's own machine, or None. Such a server runs as Cove's OS
    user (``os_user``) and so can read Cove's database and secret key; only ``owner`` (the first admin, the person who
    runs Cove, who can read them anyway) may start one, unless the operator trusts every user as much."""
    if trust_all_users or user == owner:
        return None
    return (
        f"embedded notebooks run as Cove's OS user ({os_user}) and could read its database; on one machine only "
        f"{owner} may start one; use Kubernetes for a team (COVE_HUB_SPAWNER=kubernetes: each server a pod with "
        "only its own home volume)"
    )


class LocalPoolSpawner(PoolSpawnerMixin, SimpleLocalProcessSpawner):
    """Real JupyterLab processes on this machine, one per server, admitted against the local pools. They run as
    Cove's own OS user (root included: JupyterLab gets ``--allow-root``), so only the first admin may start one
    (``embedded_refusal``). Running each person's server as an OS user of their own would need Cove's home, its
    environment and every file in it set up for other users to read only what they may; until Cove does that, a
    team uses Kubernetes."""

    trust_all_users = Bool(
        False,
        help="Let every Cove user start a server on this machine, though servers run as Cove's OS user and can read "
        "its database and secret key (and so act as any user): only where every user is trusted as an admin.",
    ).tag(config=True)

    def refusal(self, who: Principal) -> str | None:
        owner = users.first_admin(db=self._db()).name
        os_user = pwd.getpwuid(os.geteuid()).pw_name
        return embedded_refusal(user=who.name, owner=owner, os_user=os_user, trust_all_users=self.trust_all_users)

    async def start(self) -> Any:
        await self.claim()
        try:
            return await super().start()
        except BaseException:
            await self.release()
            raise

    async def poll(self) -> int | None:
        status: int | None = await super().poll()
        if status is not None and self.pid:  # the process ended on its own: give its capacity back
            await self.release()
        return status


class KubePoolSpawner(PoolSpawnerMixin, KubeSpawner):
    """A pod per server, sized by its profile (CPU and memory, whole GPUs or a HAMi slice) and placed on its pool's
    nodes; the home volume, the read-only data volumes and the security context come from hub/jupyterhub_config.py.
    The claim is taken before the pod is created, so a full pool refuses at once and nothing is left behind."""

    DATA = "/data"
    _profile: Profile  # the claimed profile, between admission and the pod's creation

    def data_dirs(self) -> tuple[str, str]:
        return f"{self.DATA}/models", f"{self.DATA}/datasets"

    async def _start(self) -> Any:
        self._profile = await self.claim()
        try:
            return await super()._start()
        except TimeoutError as exc:
            pod = self.pod_reflector.pods.get(f"{self.namespace}/{self.pod_name}") if self.pod_reflector else None
            await self.stop(now=True)  # releases the claim; a pod left Pending would take the capacity once it fits
            reason = pending_reason(pod)
            if reason:
                raise web.HTTPError(503, f"the server did not start in {self.start_timeout} s; {reason}") from exc
            raise
        except BaseException:
            await self.release()
            raise

    async def load_user_options(self) -> None:
        """Apply the claimed Cove profile (KubeSpawner's own ``profile_list`` is not used)."""
        for name, value in kubespawner_traits(self._profile).items():
            setattr(self, name, value)

    async def poll(self) -> int | None:
        status: int | None = await super().poll()
        if status is not None:  # the pod is gone or its notebook exited: give its capacity back
            await self.release()
        return status


def singleuser_args(*, allow_root: bool | None = None) -> list[str]:
    """JupyterLab as the single-user app: no news or update checks (they reach the internet); ``--allow-root`` when
    the server runs as root (by default: when this process does)."""
    args = [
        "--ServerApp.default_url=/lab",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    if os.geteuid() == 0 if allow_root is None else allow_root:
        args.append("--allow-root")
    return args
