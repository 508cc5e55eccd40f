"""Deployments: live status, the endpoint with code to call it, scale / stop / delete, logs, traffic and events."""

from datetime import timedelta

import streamlit as st

from studio.errors import NotFound
from studio.ui import tables
from studio.ui.facade import current
from studio.ui.feedback import flash, guarded
from studio.values import Status

studio = current()
st.title("Deployments")

names = studio.deployment_names()
if not names:
    st.info("Nothing is deployed yet.")
    st.page_link("app_pages/deploy.py", label="Deploy a model", icon=":material/rocket_launch:")
    st.stop()
if st.session_state.get("deployment") not in names:
    st.session_state["deployment"] = names[0]


@st.fragment(run_every=timedelta(seconds=5))
def overview() -> None:
    """Every deployment, refreshed every 5 s (the chosen one below every 2 s): listing thousands costs ~0.2 s."""
    st.dataframe(tables.deployment_rows(studio.deployments()), hide_index=True, width="stretch")


@st.fragment(run_every=timedelta(seconds=2))
def live(name: str) -> None:
    """The chosen deployment's status and endpoint, refreshed every 2 s."""
    try:
        dep = studio.deployment(name)
    except NotFound:
        st.info(f"{name} is gone.")
        return
    color = tables.STATUS_COLORS.get(Status(dep.status), "gray")
    st.markdown(f"### {dep.name} · :{color}[{dep.shown_status}] · {dep.ready_replicas}/{dep.replicas} ready")
    st.caption(
        f"{dep.model} v{dep.model_version} on {dep.image}:{dep.image_version} in pool {dep.pool} · "
        f"{dep.resources.cpu:g} CPU / {dep.resources.memory_mib} MiB per replica"
        + (f" · autoscale {dep.autoscale.min_replicas}–{dep.autoscale.max_replicas}" if dep.autoscale else "")
    )
    if dep.sleeping:
        st.info(dep.sleep_words)
    elif dep.message:
        (st.error if dep.status == Status.FAILED else st.info)(dep.message)
    if dep.kv_planned or dep.kv_observed:  # the memory plan's prediction beside what the runtime reported
        planned = dep.kv_planned.describe() if dep.kv_planned else "not planned"
        reported = dep.kv_observed.describe() if dep.kv_observed else "not reported yet"
        st.caption(f"KV cache · planned: {planned} · runtime: {reported}")
    base = studio.settings.gateway_url
    st.markdown(f'Endpoint: `{base}/v1` with `model="{dep.name}"` and an API key.')


overview()
name = st.selectbox("Deployment", names, key="deployment")
live(name)

use, logs, traffic, events, manage = st.tabs(["Use it", "Logs", "Traffic", "Events", "Scale / stop / delete"])
with use:
    snippets = tables.client_snippets(studio.settings.gateway_url, name)
    st.code(snippets["curl"], language="bash")
    st.code(snippets["python"], language="python")
    st.page_link("app_pages/keys.py", label="Create an API key", icon=":material/key:")

with logs:
    lines = studio.logs(name, tail=200)
    st.code("\n".join(lines) if lines else "(no log lines yet)", language="log")
    st.button("Refresh logs", key="refresh-logs")

with traffic:
    frame = tables.traffic_frame(studio.traffic(name))
    if frame.empty:
        st.caption("No requests in the last hour.")
    else:
        st.caption("Per minute, from the gateway's metering of the last hour.")
        st.bar_chart(frame[["requests", "errors"]])
        st.line_chart(frame[["prompt tokens", "completion tokens"]])
        st.line_chart(frame[["latency ms", "time to first token ms"]])

with events:
    st.dataframe(tables.event_rows(studio.recent_events(name=name, limit=50)), hide_index=True, width="stretch")

with manage:
    current_replicas = studio.deployment(name).replicas
    wanted = st.number_input("Replicas", min_value=0, max_value=64, value=current_replicas, key=f"replicas-{name}")
    scale_col, stop_col, delete_col = st.columns(3)
    if scale_col.button("Scale", icon=":material/tune:", disabled=wanted == current_replicas, key="scale"):
        with guarded(f"scale {name}"):
            studio.scale(name, int(wanted))
            flash(f"Scaling {name} to {int(wanted)} replica(s).")
            st.rerun()
    if stop_col.button("Stop (0 replicas)", icon=":material/stop_circle:", disabled=current_replicas == 0, key="stop"):
        with guarded(f"stop {name}"):
            studio.scale(name, 0)
            flash(f"Stopping {name}; its settings are kept, scale it up to start it again.")
            st.rerun()
    with delete_col.popover("Delete", icon=":material/delete:"):
        st.write(f"Delete **{name}**? Its replicas are stopped and the gateway stops routing to it.")
        if st.button("Delete", type="primary", key="delete-deployment"):
            with guarded(f"delete {name}"):
                studio.delete(name)
                flash(f"Deleting {name}.")
                st.rerun()
