"""Which lock the settings pick for the controller's election, and the elector's turns (pure; no database)."""

from __future__ import annotations

from pathlib import Path

from studio.leadership import AdvisoryLock, Always, Elector, FileLock, LeaseLock, lock_for
from tests.conftest import make_settings
from tests.fakes.locks import GivenLock

IN_A_POD = {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}


def test_auto_picks_the_lock_of_where_the_server_runs(tmp_path: Path) -> None:
    sqlite = make_settings(tmp_path / "cove")
    chosen = lock_for(sqlite, me="a", environ={})
    assert isinstance(chosen, FileLock)
    assert chosen.path == tmp_path / "cove" / "cove.db.leader"
    postgres = make_settings(tmp_path / "cove", database_url="postgresql+psycopg://cove@127.0.0.1:1/cove")
    assert isinstance(lock_for(postgres, me="a", environ=IN_A_POD), AdvisoryLock)  # a pod, but local replicas
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters: [{name: k, cluster: {server: 'http://127.0.0.1:1'}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\nusers: [{name: u, user: {}}]\n"
    )
    cluster = make_settings(
        tmp_path / "cove", database_url=postgres.database_url, backend="kubernetes", kubeconfig=str(kubeconfig),
        release="team-a", kube_namespace="models",
    )  # fmt: skip
    lease = lock_for(cluster, me="a", environ=IN_A_POD)
    assert isinstance(lease, LeaseLock)
    assert (lease.namespace, lease.name) == ("models", "team-a-controller")
    assert isinstance(lock_for(cluster, me="a", environ={}), AdvisoryLock)  # driving a cluster from outside it


def test_off_and_a_database_only_this_process_can_open_always_lead(tmp_path: Path) -> None:
    off = make_settings(tmp_path / "cove", leader_election="off")
    memory = make_settings(tmp_path / "cove", database_url="sqlite:///:memory:")
    assert isinstance(lock_for(off, me="a", environ={}), Always)
    assert isinstance(lock_for(memory, me="a", environ={}), Always)


def test_the_elector_leads_while_it_holds_the_lock_and_says_who_does_when_it_does_not() -> None:
    switch, turns = GivenLock(), []
    elector = Elector(switch, me="a", retry_s=60, on_change=turns.append)
    elector.step()
    assert elector.report() == {"role": "leader", "leader": "a", "me": "a"}
    switch.free = False
    elector.step()
    assert elector.report() == {"role": "follower", "leader": "", "me": "a"}
    assert switch.released == 1
    elector.step()
    assert elector.leader == "b"
    switch.free = True
    elector.step()
    assert turns == [True, False, True]
