"""Overview: the pools and what is allocated of them, the clusters they are on, deployments by status, and what
happened lately."""

import streamlit as st

from studio.models import ClusterCreate
from studio.ui import tables
from studio.ui.facade import current
from studio.ui.feedback import flash, guarded

studio = current()
st.title("Overview")

st.subheader("Pools")
pools = studio.pools()
for usage in pools:
    st.progress(tables.cpu_share(usage), text=f"**{usage.pool.name}** · CPU allocated · free: {usage.free.describe()}")
st.dataframe(tables.pool_rows(pools), hide_index=True, width="stretch")

st.subheader("Clusters")
st.caption(
    "This one is `default`. Other Kubernetes clusters are registered by kubeconfig; their nodes labelled "
    "`cove.dev/pool=<pool>` become pools, and deployments run on their pool's cluster."
)
registered = studio.clusters()
if registered:
    st.dataframe(tables.cluster_rows(registered), hide_index=True, width="stretch")
with st.expander("Register a cluster"), st.form("add-cluster"):
    left, middle, right = st.columns(3)
    name = left.text_input("Name", key="cluster-name", placeholder="east")
    context = middle.text_input("Context (optional)", key="cluster-context", help="Default: the current context.")
    namespace = right.text_input("Namespace", key="cluster-namespace", value="cove")
    kubeconfig = st.text_area(
        "Kubeconfig",
        key="cluster-kubeconfig",
        help="What `kubectl config view --raw --minify --flatten` prints (certificates inline). It is kept, "
        "credentials included, and never shown.",
    )
    if st.form_submit_button("Register cluster", type="primary"):
        with guarded("register the cluster"):
            added = studio.add_cluster(
                ClusterCreate(name=name.strip(), kubeconfig=kubeconfig, context=context.strip(), namespace=namespace)
            )
            flash(f"Registered cluster {added.name} ({added.server}).")
            st.rerun()
if registered:
    with st.expander("Remove a cluster"):
        gone = st.selectbox("Cluster", [c.name for c in registered], key="cluster-remove")
        if st.button("Remove cluster", key="remove-cluster"):
            with guarded("remove the cluster"):
                studio.remove_cluster(gone)
                flash(f"Removed cluster {gone}.")
                st.rerun()

st.subheader("Deployments")
counted = studio.status_counts()
if not counted:
    st.info("Nothing is deployed yet.")
    st.page_link("app_pages/deploy.py", label="Deploy a model", icon=":material/rocket_launch:")
else:
    counts = tables.status_counts(counted)
    for column, (status, count) in zip(st.columns(len(counts)), counts.items(), strict=True):
        column.metric(status, count)
    st.page_link("app_pages/deployments.py", label="All deployments", icon=":material/dns:")

st.subheader("Recent events")
recent = studio.recent_events(limit=20)
if recent:
    st.dataframe(tables.event_rows(recent), hide_index=True, width="stretch")
else:
    st.caption("No events yet.")
