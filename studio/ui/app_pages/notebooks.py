"""Notebooks: every user's JupyterLab server with the pool and profile it holds; start and stop them (through the
hub's REST API with the studio's service token)."""

import streamlit as st

from studio.ui.facade import current
from studio.ui.feedback import flash, guarded
from studio.values import Resources

studio = current()
st.title("Notebooks")
st.caption(
    f"People log in at {studio.settings.hub_url} and pick a profile. Here an admin sees and starts everyone's servers;"
    " a member their own."
)


def _gpu(r: Resources) -> str:
    return f"{r.gpus} whole" if r.gpus else (f"{r.gpu_memory_mib} MiB slice" if r.gpu_memory_mib else "none")


servers = []
with guarded("reach the notebook hub"):
    servers = studio.notebook_servers()
claims = {c.name: c for c in studio.notebook_claims()}
rows = []
for s in servers:
    claim = claims.get(f"{s.user}/{s.name}" if s.name else s.user)
    rows.append(
        {
            "user": s.user,
            "state": "ready" if s.ready else (s.pending or "stopped"),
            "pool": claim.pool if claim else "",
            "profile": claim.profile if claim else "",
            "CPU": f"{claim.resources.cpu:g}" if claim else "",
            "GPUs": (
                claim.resources.gpus
                or (f"{claim.resources.gpu_memory_mib} MiB" if claim.resources.gpu_memory_mib else 0)
            )
            if claim
            else "",
            "started": s.started or "",
            "last activity": s.last_activity or "",
        }
    )
if rows:
    st.dataframe(rows, hide_index=True, width="stretch")
else:
    st.caption("No notebook server is running.")

left, right = st.columns(2)
with left, st.form("start-notebook"):
    st.subheader("Start a server")
    user = st.text_input("User", value=studio.actor.name, key="notebook-user", disabled=not studio.actor.is_admin)
    profiles = {p.slug: p for p in studio.notebook_profiles()}
    profile = st.selectbox(
        "Profile",
        list(profiles),
        format_func=lambda slug: f"{profiles[slug].display_name} — {profiles[slug].description}",
        key="notebook-profile",
    )
    if st.form_submit_button("Start", type="primary"):
        with guarded(f"start a server for {user or 'nobody'}"):
            studio.start_notebook(user.strip(), profile or "")
            flash(f"Starting {user.strip()}'s server ({profile}).")
            st.rerun()
with right:
    st.subheader("Stop a server")
    running = sorted({s.user for s in servers})
    target = st.selectbox("User", running, key="notebook-stop-user")
    if st.button("Stop", key="notebook-stop", disabled=not running):
        with guarded(f"stop {target}'s server"):
            studio.stop_notebook(str(target))
            flash(f"Stopping {target}'s server; its capacity returns to the pool.")
            st.rerun()
