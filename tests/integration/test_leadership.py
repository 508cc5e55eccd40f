"""Several control planes on one database: one migrator at a time, one controller leading, and a follower that
takes over when the leader dies — with real `cove server` processes and a real PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from studio.backends.base import WorkloadSpec, WorkloadStatus
from studio.bootstrap import open_studio
from studio.controller import Controller
from studio.db import Database, current_revision, head_revision, make_engine
from studio.leadership import AdvisoryLock, Elector, FileLock
from studio.models import DeploymentCreate, ModelCreate
from studio.services import deployments, models
from studio.settings import Settings
from studio.values import Resources
from tests.conftest import free_port, make_settings, new_postgres_database
from tests.fakes.backends import InstantBackend
from tests.fakes.locks import GivenLock
from tests.integration.conftest import (
    CoveServer,
    add_fake_image,
    deploy,
    runtime_pids,
    status_of,
    wait_until,
    write_stub_model,
)
from tests.people import ADMIN

MIGRATE = "import sys; from studio.db import open_database; open_database(sys.argv[1]).dispose()"


@pytest.mark.runtime
def test_concurrent_migrators_on_a_fresh_database_migrate_it_once(empty_database_url: str) -> None:
    """The server, the UI and the hub starting at once: each opens (and would migrate) the same fresh database."""
    procs = [
        subprocess.Popen([sys.executable, "-c", MIGRATE, empty_database_url], stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], "\n".join(errors)
    engine = make_engine(empty_database_url)
    try:
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


def test_only_one_holder_of_a_file_lock_leads_and_the_other_takes_over_when_it_goes(tmp_path: Path) -> None:
    first = Elector(FileLock(tmp_path / "cove.db.leader", me="a"), me="a", retry_s=0.05)
    second = Elector(FileLock(tmp_path / "cove.db.leader", me="b"), me="b", retry_s=0.05)
    first.start()
    second.start()
    try:
        assert first.leading
        assert not second.leading
        assert second.report() == {"role": "follower", "leader": "a", "me": "b"}
        first.stop()
        assert second.wait_until_leading(5)
        assert second.report()["role"] == "leader"
    finally:
        first.stop()
        second.stop()


@pytest.mark.postgres
def test_a_leader_whose_lock_connection_breaks_stops_leading_at_once(postgres: str) -> None:
    url = new_postgres_database(postgres)
    lock = AdvisoryLock(url, me="a")
    elector = Elector(lock, me="a", retry_s=60)
    other = AdvisoryLock(url, me="b")
    try:
        elector.step()
        assert elector.leading
        assert not other.acquire()
        assert other.holder() == "a"
        assert lock._conn is not None
        # the database ends the leader's session (as a failover or a network cut would)
        other._connection().exec_driver_sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'cove a'"
        )
        elector.step()
        assert not elector.leading
        assert other.acquire()
    finally:
        elector.stop()
        other.release()


def healthz(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url + "/healthz", timeout=5) as response:
        return dict(json.loads(response.read()))


def role(server: CoveServer) -> str:
    try:
        return str(healthz(server.settings.gateway_url)["controller"]["role"])  # type: ignore[index]
    except OSError:
        return ""


@pytest.mark.runtime
@pytest.mark.postgres
def test_two_servers_on_one_database_one_leads_and_the_other_takes_over_within_15_s(
    tmp_path: Path, postgres: str
) -> None:
    url = new_postgres_database(postgres)
    home = tmp_path / "cove"  # one machine: both servers see the replicas' state files, as a new leader must
    settings = make_settings(home, database_url=url, leader_retry_s=1)
    db = open_studio(settings)
    servers: list[CoveServer] = []
    try:
        models.add_model(
            actor=ADMIN,
            db=db,
            data=ModelCreate(name="stub", source=str(write_stub_model(tmp_path / "stub"))),
            cache_dir=settings.models_dir,
        )
        deploy(db, "chat", "stub", add_fake_image(db, "scripted_runtime.py"), replicas=2)
        first = CoveServer(settings, tmp_path / "first.log").start()
        servers.append(first)
        wait_until(lambda: deployments.get_deployment(actor=ADMIN, db=db, name="chat").status == "Ready", timeout=60,
                   what="the deployment to be Ready")  # fmt: skip
        second_settings = settings.model_copy(update={"port": free_port()})
        second = CoveServer(second_settings, tmp_path / "second.log").start()
        servers.append(second)
        assert (role(first), role(second)) == ("leader", "follower")
        leader_id = healthz(first.settings.gateway_url)["controller"]["me"]  # type: ignore[index]
        assert healthz(second.settings.gateway_url)["controller"]["leader"] == leader_id  # type: ignore[index]
        # the follower does not reconcile: its passes would start replicas of its own beside the leader's
        wait_until(lambda: len(runtime_pids(home)) == 2, timeout=30, what="two replicas")
        time.sleep(3 * settings.controller_interval_s)  # several passes of both servers
        replicas = runtime_pids(home)
        assert len(replicas) == 2
        endpoints = deployments.get_deployment(actor=ADMIN, db=db, name="chat").endpoints
        assert len(endpoints) == 2

        first.kill()  # kill -9: no lock released by hand, replicas left running
        died = time.monotonic()
        wait_until(lambda: role(second) == "leader", timeout=15, what="the follower to take the lead")
        assert time.monotonic() - died < 15
        assert "leading: this server" in second.log()
        # it adopts the dead leader's replicas rather than starting more
        wait_until(lambda: second.log().count("adopted running pid") == 2, timeout=15, what="the replicas adopted")
        wait_until(lambda: "ready on port" in second.log(), timeout=15, what="the new leader to probe them")
        assert runtime_pids(home) == replicas
        assert deployments.get_deployment(actor=ADMIN, db=db, name="chat").ready_replicas == 2
    finally:
        for server in reversed(servers):
            if server.proc is not None and server.proc.poll() is None:
                server.stop()
        db.dispose()
    assert runtime_pids(home) == set()


def test_a_kubernetes_lease_has_one_holder_and_is_taken_over_once_its_holder_stops_renewing() -> None:
    from kubernetes import client

    from studio.backends.kubernetes.client import connect
    from studio.leadership import LeaseLock
    from tests.fakes.kubeapi import Cluster
    from tests.fakes.processes import FakeClock

    with Cluster() as cluster:
        clock = FakeClock()

        def lease(me: str) -> LeaseLock:
            api = client.CoordinationV1Api(connect(host=cluster.url))
            return LeaseLock(api, namespace="cove", name="cove-controller", me=me, duration_s=10, clock=clock)

        first, second = Elector(lease("a"), me="a", retry_s=60), Elector(lease("b"), me="b", retry_s=60)
        first.step()
        second.step()
        assert first.leading
        assert not second.leading
        assert second.leader == "a"
        clock.advance(5)
        first.step()  # renewed
        second.step()
        assert first.leading
        assert not second.leading
        # the leader dies: nothing renews the Lease; once it has not changed for its duration, it is taken over
        clock.advance(9)
        second.step()
        assert not second.leading
        clock.advance(2)
        second.step()
        assert second.leading
        assert cluster.api is not None
        stored = cluster.api.stored("leases", "cove")
        assert [o["spec"]["holderIdentity"] for o in stored] == ["b"]
        assert stored[0]["spec"]["leaseTransitions"] == 1
        # the old leader, back, sees another holder and stops leading at once
        first.step()
        assert not first.leading
        second.stop()  # gives the Lease up: the next taker need not wait out its duration
        first.step()
        assert first.leading


def test_a_controller_that_loses_the_lead_mid_pass_writes_nothing_more(
    db: Database, settings: Settings, stub_model: str
) -> None:
    switch = GivenLock()
    elector = Elector(switch, me="a", retry_s=60)
    elector.step()

    class LosesTheLead(InstantBackend):
        """Its first apply takes as long as it takes another server to take the lock."""

        def apply(self, spec: WorkloadSpec) -> WorkloadStatus:
            switch.free = False
            elector.step()
            return super().apply(spec)

    backend = LosesTheLead()
    deploy(db, "first", stub_model)
    deploy(db, "second", stub_model)
    ctl = Controller(db=db, backend=backend, settings=settings, leadership=elector)
    ctl.reconcile()
    assert set(backend.specs) == {"first"}  # "second" was left to the new leader
    assert deployments.get_deployment(actor=ADMIN, db=db, name="first").status == "Ready"
    assert deployments.get_deployment(actor=ADMIN, db=db, name="second").status == "Pending"


def kubeconfig_for(cluster_url: str, path: Path) -> str:
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: lab\n"
        f"clusters: [{{name: lab, cluster: {{server: '{cluster_url}'}}}}]"
        "\ncontexts: [{name: lab, context: {cluster: lab, user: lab}}]\nusers: [{name: lab, user: {token: t}}]\n"
    )
    return str(path)


@pytest.mark.runtime
@pytest.mark.postgres
def test_two_servers_on_one_cluster_elect_through_a_lease_and_the_follower_adopts_the_leaders_objects(
    tmp_path: Path, postgres: str
) -> None:
    """Two `cove server` with the Kubernetes backend, one API (the emulator) and one PostgreSQL: one reconciles and
    makes the Deployment once; killed with SIGKILL, the other takes the Lease within 15 s (the defaults: a 10 s
    Lease, tried every 2 s) and goes on with the same objects, making none again."""
    from tests.fakes.kubeapi import Cluster

    with Cluster() as cluster:
        api = cluster.api
        assert api is not None
        pool = {"name": "cpu", "purpose": "serve", "gpuCount": 0, "cpuCores": 8, "memoryMib": 16384}
        settings = make_settings(
            tmp_path / "cove", database_url=new_postgres_database(postgres), backend="kubernetes",
            kubeconfig=kubeconfig_for(cluster.url, tmp_path / "kubeconfig"), kube_namespace="models",
            models_pvc="cove-models", pools=[pool], leader_election="kubernetes",
        )  # fmt: skip
        db = open_studio(settings)
        servers: list[CoveServer] = []
        try:
            models.add_model(
                actor=ADMIN, db=db, data=ModelCreate(name="stub", source=str(write_stub_model(tmp_path / "stub"))),
                cache_dir=settings.models_dir,
            )  # fmt: skip
            deployments.create_deployment(
                actor=ADMIN, db=db, data=DeploymentCreate(name="chat", model="stub", pool="cpu",
                                                          resources=Resources(cpu=0.5, memory_mib=256)),
            )  # fmt: skip
            first = CoveServer(settings, tmp_path / "first.log").start()
            servers.append(first)
            wait_until(lambda: role(first) == "leader", timeout=30, what="the first server to lead")
            second = CoveServer(settings.model_copy(update={"port": free_port()}), tmp_path / "second.log").start()
            servers.append(second)
            wait_until(lambda: role(second) == "follower", timeout=30, what="the second server to follow")
            leader_id = healthz(first.settings.gateway_url)["controller"]["me"]  # type: ignore[index]
            assert healthz(second.settings.gateway_url)["controller"]["leader"] == leader_id  # type: ignore[index]

            def ready() -> bool:
                cluster.settle("run")  # the test plays the Deployment controller and the kubelet
                return status_of(db, "chat", "Ready")

            wait_until(ready, timeout=60, what="the deployment to be Ready")
            (lease,) = api.stored("leases", "models")
            assert lease["metadata"]["name"] == "cove-controller"
            assert lease["spec"]["holderIdentity"] == leader_id
            assert [d["metadata"]["name"] for d in api.sent("POST", "deployments")] == ["chat"]

            first.kill()  # kill -9: the Lease is left held, renewed by nobody
            died = time.monotonic()
            wait_until(lambda: role(second) == "leader", timeout=15, what="the follower to take the Lease")
            failover_s = time.monotonic() - died
            print(f"failover through the Lease: {failover_s:.1f} s")
            assert failover_s < 15
            (lease,) = api.stored("leases", "models")
            assert lease["spec"]["holderIdentity"] == healthz(second.settings.gateway_url)["controller"]["me"]  # type: ignore[index]
            assert lease["spec"]["leaseTransitions"] == 1
            # the new leader acts on the Deployment it found: a change reaches it as a patch, nothing is made anew
            deployments.scale_deployment(actor=ADMIN, db=db, name="chat", replicas=2)
            wait_until(
                lambda: any(p.get("spec", {}).get("replicas") == 2 for p in api.sent("PATCH", "deployments")),
                timeout=15, what="the new leader to scale the Deployment",
            )  # fmt: skip

            def both_ready() -> bool:
                cluster.settle("run")
                return deployments.get_deployment(actor=ADMIN, db=db, name="chat").ready_replicas == 2

            wait_until(both_ready, timeout=30, what="two replicas Ready")
            assert [d["metadata"]["name"] for d in api.sent("POST", "deployments")] == ["chat"]
            assert [d["metadata"]["name"] for d in api.stored("deployments", "models")] == ["chat"]
            assert len(api.sent("POST", "services")) <= 1
        finally:
            for server in reversed(servers):
                if server.proc is not None and server.proc.poll() is None:
                    server.stop()
            db.dispose()


def test_a_lease_renewed_between_a_takers_read_and_its_write_is_not_taken() -> None:
    """Two servers that read the same version of the Lease cannot both write it: the API refuses the write made
    against a version it no longer holds (409), and the taker stays a follower."""
    from kubernetes import client

    from studio.backends.kubernetes.client import connect
    from studio.leadership import LeaseLock
    from tests.fakes.kubeapi import Cluster
    from tests.fakes.processes import FakeClock

    with Cluster() as cluster, connect(host=cluster.url) as holders, connect(host=cluster.url) as takers:
        clock = FakeClock()
        holder = LeaseLock(client.CoordinationV1Api(holders), namespace="cove", name="cove-controller", me="a",
                           duration_s=10, clock=clock)  # fmt: skip
        renew_after_next_read = False

        class RenewedMeanwhile(client.CoordinationV1Api):  # type: ignore[misc]
            """When told, what the taker reads is stale by the time it writes: the holder renews in between."""

            def read_namespaced_lease(self, *args: object, **kwargs: object) -> object:
                lease = super().read_namespaced_lease(*args, **kwargs)
                if renew_after_next_read:
                    assert holder.renew()
                return lease

        taker = LeaseLock(RenewedMeanwhile(takers), namespace="cove", name="cove-controller", me="b", duration_s=10,
                          clock=clock)  # fmt: skip
        assert holder.acquire()
        assert not taker.acquire()  # seen held, not yet expired: no write tried
        clock.advance(11)  # as the taker's clock sees it, the holder has gone quiet since
        renew_after_next_read = True
        assert not taker.acquire()  # it wrote with the version it read, and was refused
        assert cluster.api is not None
        (lease,) = cluster.api.stored("leases", "cove")
        assert lease["spec"]["holderIdentity"] == "a"
        assert len(cluster.api.sent("PATCH", "leases")) == 2  # the holder's renewal and the taker's refused write
