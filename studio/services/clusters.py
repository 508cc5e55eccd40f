"""Clusters registered by kubeconfig: deployments on their pools run there.

The control plane's own backend (``COVE_BACKEND``) is the cluster named ``default`` and is not stored. A registered
cluster keeps its kubeconfig (credentials included) in the database, sealed under the studio's key
(``studio.sealing``), and never shows it; its pools are made from its nodes labelled ``cove.dev/pool`` by the
controller, which also records whether the cluster answers.
"""

from __future__ import annotations

from typing import Any

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


def read_kubeconfig(text: str, context: str = "") -> tuple[str, str]:
    """The context a kubeconfig's text selects (``context``, else its current one) and that context's API server
    URL; InvalidSpec saying what is missing otherwise."""
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
    clusters = {c.get("name"): c.get("cluster") or {} for c in config["clusters"] if isinstance(c, dict)}
    server = (clusters.get(contexts[chosen].get("cluster")) or {}).get("server")
    if not server:
        raise InvalidSpec(
            f"context {chosen!r} names no cluster with a server URL", hint="check the kubeconfig's clusters"
        )
    return chosen, str(server)


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
