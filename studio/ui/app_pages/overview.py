"""Overview: the pools and what is allocated of them, the clusters they are on, deployments by status, and what
happened lately."""

import streamlit as st

from studio.ui import tables
from studio.ui.facade import current

studio = current()
st.title("Overview")

st.subheader("Pools")
pools = studio.pools()
for usage in pools:
    st.progress(tables.cpu_share(usage), text=f"**{usage.pool.name}** · CPU allocated · free: {usage.free.describe()}")
st.dataframe(tables.pool_rows(pools), hide_index=True, width="stretch")
registered = studio.clusters()
if registered:
    st.caption("Clusters besides this one (`cove cluster add`); their pools come from nodes labelled cove.dev/pool.")
    st.dataframe(tables.cluster_rows(registered), hide_index=True, width="stretch")

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
