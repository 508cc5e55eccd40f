"""Clusters registered by kubeconfig: deployments on their pools run there.

The control plane's own backend (``COVE_BACKEND``) is the cluster named ``default`` and is not stored. A registered
cluster keeps its kubeconfig (credentials included) in the database, sealed under the studio's key
(``studio.sealing``), and never shows it; its pools are made from its nodes labelled ``cove.dev/pool`` by the
controller, which also records whether the cluster answers.
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
import yaml
from sqlmodel import col, select

from studio import access
from studio.backends.base import Connection
from studio.db import Database, utcnow
from studio.errors import Conflict, CoveError, InvalidSpec, NotFound
from studio.models import Cluster, ClusterCreate, ClusterPublic, Deployment, Notebook, Pool
from studio.sealing import seal, unseal
from studio.services.events import NewEvent, add_events
from studio.values import Principal

KIND = "cluster"

RAW = "give the file `kubectl config view --raw --minify --flatten` prints"

# What a kubeconfig may not hold. The Kubernetes client that loads a registered kubeconfig in Cove's controller runs
# an `exec` plugin's command, lets an auth-provider (gcp, azure, oidc) fetch credentials by its own means (the pod's
# own cloud identity, files, an identity provider), and reads the files these keys name: all as the controller's
# user, inside its pod. A kubeconfig is a user's input, so it must carry its credentials inline (token,
# client-certificate-data, client-key-data, certificate-authority-data).
RUNS_A_COMMAND = {
    "exec": "runs a command",
    "auth-provider": "fetches credentials by the plugin's own means (the pod's cloud identity, files)",
}
READS_A_FILE = ("tokenFile", "client-certificate", "client-key", "certificate-authority")
INLINE = "use `kubectl config view --raw --minify --flatten`, which puts certificate files inline as *-data"
NO_PLUGIN = (
    "register a kubeconfig whose user has a token or an inline client certificate, e.g. a ServiceAccount token "
    "(`kubectl create token …`)"
)
# Plain http is taken on the loopback only: a local API emulator or a `kubectl proxy` (which adds the credentials
# itself) listens there, and nothing leaves the host; anywhere else it would send the credentials in the clear.
LOOPBACK_NAMES = {"localhost"}


def read_kubeconfig(text: str, context: str = "") -> tuple[str, str]:
    """The context a kubeconfig's text selects (``context``, else its current one) and that context's API server
    URL; InvalidSpec saying what is missing otherwise, and refusing, whichever context is chosen, any user or
    cluster entry that would have the controller run a command or read a file (``_refuse_unsafe_entries``) and any
    server URL that is not https (plain http on the loopback only, ``_check_server``)."""
    try:
        config: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidSpec(f"the kubeconfig is not YAML: {exc}", hint=RAW) from exc
    if not isinstance(config, dict) or not config.get("contexts") or not config.get("clusters"):
        raise InvalidSpec("the kubeconfig has no contexts or clusters", hint=RAW)
    contexts = {c.get("name"): c.get("context") or {} for c in config["contexts"] if isinstance(c, dict)}
    chosen = context or config.get("current-context") or ""
    if chosen not in contexts:
        known = ", ".join(sorted(str(c) for c in contexts)) or "none"
        what = f"no context named {chosen!r}" if chosen else "no current context"
        raise InvalidSpec(f"the kubeconfig has {what}", hint=f"choose one of its contexts: {known}")
    _refuse_unsafe_entries(config)
    clusters = {c.get("name"): c.get("cluster") or {} for c in config["clusters"] if isinstance(c, dict)}
    server = (clusters.get(contexts[chosen].get("cluster")) or {}).get("server")
    if not server:
        raise InvalidSpec(
            f"context {chosen!r} names no cluster with a server URL", hint="check the kubeconfig's clusters"
        )
    for name, cluster in _entries(config, "clusters", "cluster"):
        if cluster.get("server"):
            _check_server(name, str(cluster["server"]))
        if cluster.get("insecure-skip-tls-verify") is True and not _is_loopback(_host(str(cluster.get("server")))):
            raise InvalidSpec(
                f"the kubeconfig's cluster {name!r} has insecure-skip-tls-verify, so Cove would send its credentials "
                "to whoever answers at its address",
                hint="give the cluster's CA as certificate-authority-data instead (taken without it on the loopback "
                "only)",
            )
    return chosen, str(server)


def _entries(config: dict[str, Any], section: str, field: str) -> list[tuple[str, dict[str, Any]]]:
    """(name, body) of each entry of ``section`` (users, clusters); an entry without a name is named by its index."""
    listed = config.get(section) or []
    found = []
    for i, entry in enumerate(listed if isinstance(listed, list) else []):
        if isinstance(entry, dict) and isinstance(entry.get(field), dict):
            found.append((str(entry.get("name", f"{section}[{i}]")), entry[field]))
    return found


def _refuse_unsafe_entries(config: dict[str, Any]) -> None:
    """InvalidSpec naming the first user or cluster (of all in the file, not only the chosen context's) with a key
    that runs a command (``RUNS_A_COMMAND``) or names a file (``READS_A_FILE``, or any key ending in ``-file`` or
    ``File``) in the controller."""
    for section, field in (("users", "user"), ("clusters", "cluster")):
        for name, body in _entries(config, section, field):
            where = f"the kubeconfig's {field} {name!r}"
            for key in sorted(body):
                if key in RUNS_A_COMMAND:
                    raise InvalidSpec(
                        f"{where} has {key}, which {RUNS_A_COMMAND[key]} in Cove's controller", hint=NO_PLUGIN
                    )
                if key in READS_A_FILE or key.endswith(("-file", "File")):
                    hint = "put the token itself in `token`" if key == "tokenFile" else INLINE
                    raise InvalidSpec(f"{where} has {key}, a file path Cove's controller would read", hint=hint)


def _check_server(name: str, server: str) -> None:
    """InvalidSpec unless ``server`` is an https URL, or an http one on the loopback (``LOOPBACK_NAMES`` or a
    loopback address)."""
    try:
        url = urlsplit(server)
        scheme, host = url.scheme, url.hostname or ""
    except ValueError:  # an unbalanced [ in the host
        scheme, host = "", ""
    if host and (scheme == "https" or (scheme == "http" and _is_loopback(host))):
        return
    raise InvalidSpec(
        f"the kubeconfig's cluster {name!r} has the server URL {server!r}, which is not https",
        hint="Cove sends the cluster's credentials there: give its https URL (plain http is taken on the loopback "
        "only: a local emulator or `kubectl proxy`)",
    )


def _host(server: str) -> str:
    try:
        return urlsplit(server).hostname or ""
    except ValueError:
        return ""


def _is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def add_cluster(*, db: Database, actor: Principal, data: ClusterCreate, key: str) -> ClusterPublic:
    """Register a cluster, its kubeconfig sealed under ``key`` (``sealing.studio_key``). Admins only."""
    access.check_admin(actor, doing="register clusters")
    context, server = read_kubeconfig(data.kubeconfig, data.context)
    sealed = seal(data.kubeconfig, key)
    with db.session() as session:
        row = Cluster(name=data.name, kubeconfig=sealed, context=context, namespace=data.namespace, server=server)
        session.add(row)
        add_events(session, kind=KIND, name=data.name, actor=actor.name, events=[NewEvent("Registered", server)])
        try:
            session.commit()
        except sa.exc.IntegrityError as exc:
            raise Conflict(f"cluster {data.name!r} exists", hint="remove it first, or pick another name") from exc
        return ClusterPublic.model_validate(row)


def list_clusters(*, db: Database) -> list[ClusterPublic]:
    with db.session() as session:
        return [ClusterPublic.model_validate(c) for c in session.exec(select(Cluster).order_by(col(Cluster.name)))]


def remove_cluster(*, db: Database, actor: Principal, name: str) -> None:
    """Forget a cluster and its pools; refused while anything runs on them (its workloads would be orphaned).
    Admins only."""
    access.check_admin(actor, doing="remove clusters")
    with db.session() as session:
        row = session.exec(select(Cluster).where(Cluster.name == name)).first()
        if row is None:
            raise NotFound(f"no cluster named {name!r}", hint="see `cove cluster list`")
        pools = session.exec(select(Pool).where(Pool.cluster == name)).all()
        ids = [p.id for p in pools]
        users = [
            *session.exec(select(Deployment.name).where(col(Deployment.pool_id).in_(ids))).all(),
            *session.exec(select(Notebook.name).where(col(Notebook.pool_id).in_(ids))).all(),
        ]
        if users:
            raise Conflict(
                f"cluster {name!r} still runs {', '.join(sorted(users))}",
                hint="delete those deployments (and stop those notebooks) first",
            )
        for pool in pools:
            session.delete(pool)
        session.delete(row)
        add_events(session, kind=KIND, name=name, actor=actor.name, events=[NewEvent("Removed", "with its pools")])
        session.commit()


def connections(*, db: Database, key: str) -> list[Connection]:
    """How to reach each registered cluster (the controller's view, credentials unsealed). A kubeconfig that cannot
    be unsealed gives a Connection with its ``problem``, so its deployments say why."""
    with db.session() as session:
        rows = session.exec(select(Cluster).order_by(col(Cluster.name))).all()
        found = []
        for c in rows:
            try:
                kubeconfig, problem = unseal(c.kubeconfig, key, what=f"the kubeconfig of cluster {c.name!r}"), ""
            except CoveError as exc:
                kubeconfig, problem = "", str(exc)
            found.append(Connection(c.name, kubeconfig, c.context, c.namespace, problem=problem))
        return found


def record_check(*, db: Database, name: str, message: str) -> None:
    """Whether the cluster answered the controller's last capacity read (``message`` empty) or what went wrong."""
    with db.session() as session:
        row = session.exec(select(Cluster).where(Cluster.name == name)).first()
        if row is not None:
            row.message, row.checked_at = message, utcnow()
            session.add(row)
            session.commit()
