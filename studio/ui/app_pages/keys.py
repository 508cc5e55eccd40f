"""API keys and usage: create a key (its secret is shown once) — with API scopes, a personal access token for the
Cove API — revoke one, tokens per key per day."""

import streamlit as st

from studio.access import SCOPES
from studio.ui import tables
from studio.ui.facade import current
from studio.ui.feedback import flash, guarded

studio = current()
st.title("API keys & usage")

with st.form("create-key", clear_on_submit=True):
    key_name = st.text_input("New key's name", placeholder="my-app", key="key-name")
    left, right = st.columns(2)
    scope = left.multiselect(
        "May call only", studio.deployment_names(), key="key-scope", placeholder="any deployment of yours"
    )
    days = right.number_input("Expires after (days, 0: never)", min_value=0, max_value=3650, value=0, key="key-days")
    api_scopes = st.multiselect(
        "API scopes (a personal access token for the Cove API, `cove login`, CI)",
        SCOPES,
        key="key-api-scopes",
        placeholder="none: a key for the gateway only",
    )
    created = st.form_submit_button("Create key", type="primary")
if created:
    with guarded("create the key"):
        made = studio.create_key(key_name.strip(), deployments=scope, days=int(days), scopes=api_scopes)
        st.success(f"Key **{made.name}** created. Copy it now: it is shown only this once.")
        st.code(made.key, language=None)

found = studio.keys()
if found:
    st.dataframe(tables.key_rows(found, studio.now), hide_index=True, width="stretch")
    active = [k.name for k in found if k.revoked_at is None]
    if active:
        left, right = st.columns([3, 1], vertical_alignment="bottom")
        target = left.selectbox("Key to revoke", active, key="revoke-key")
        with right.popover("Revoke", icon=":material/block:"):
            st.write(f"Revoke **{target}**? Applications that use it are refused (401) from now on.")
            if st.button("Revoke", type="primary", key="revoke"):
                with guarded(f"revoke {target}"):
                    studio.revoke_key(target)
                    flash(f"Revoked {target}: requests with it are refused from now on.")
                    st.rerun()
else:
    st.caption("No keys yet.")

st.subheader("Tokens per key per day (last 30 days)")
summary = studio.usage(days=30)
frame = tables.tokens_per_key_day(summary)
if frame.empty:
    st.caption("No requests yet.")
else:
    st.bar_chart(frame)
    st.dataframe(
        [s.model_dump() for s in reversed(summary)],
        hide_index=True,
        width="stretch",
    )
