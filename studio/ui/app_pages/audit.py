"""Audit trail: who created, changed, deleted or revoked what, and when (an admin sees everyone's)."""

import streamlit as st

from studio.ui import tables
from studio.ui.facade import current

studio = current()
st.title("Audit trail")
st.caption("Everyone's actions, newest first." if studio.actor.is_admin else "Your actions, newest first.")
who = None
if studio.actor.is_admin:
    who = st.text_input("Only this user", placeholder="any user", key="audit_user").strip() or None
found = studio.audit(user=who)
if found:
    st.dataframe(tables.audit_rows(found), hide_index=True, width="stretch")
else:
    st.info("Nothing yet.", icon=":material/info:")
