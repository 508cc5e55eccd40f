"""Cove Studio: who is logged in, then navigation. Each page is a file in ``app_pages/`` (so tests can switch to it
by path)."""

import streamlit as st

from studio.ui import facade
from studio.ui.feedback import same_tab_link, show_flash

st.set_page_config(page_title="Cove Studio", page_icon=":material/sailing:", layout="wide")
who = facade.signed_in()
if who is None:  # not logged in (or no longer may be): every page waits behind the login
    st.title("Cove Studio")
    st.write("Log in to see your models, deployments, notebooks and keys.")
    st.markdown(same_tab_link("Log in", facade.login_url()), unsafe_allow_html=True)
    st.stop()
with st.sidebar:
    groups = "".join(f", {g}" for g in sorted(who.groups))
    st.caption(f"Logged in as **{who.name}** ({who.role.value}{groups})")
    st.markdown(same_tab_link("Log out", facade.logout_url()), unsafe_allow_html=True)
show_flash()
st.navigation(
    [
        st.Page("app_pages/overview.py", title="Overview", icon=":material/dashboard:", default=True),
        st.Page("app_pages/models.py", title="Models", icon=":material/neurology:"),
        st.Page("app_pages/datasets.py", title="Datasets", icon=":material/dataset:"),
        st.Page("app_pages/finetune.py", title="Fine-tune", icon=":material/model_training:"),
        st.Page("app_pages/images.py", title="Images", icon=":material/deployed_code:"),
        st.Page("app_pages/deploy.py", title="Deploy", icon=":material/rocket_launch:"),
        st.Page("app_pages/deployments.py", title="Deployments", icon=":material/dns:"),
        st.Page("app_pages/benchmarks.py", title="Benchmarks", icon=":material/speed:"),
        st.Page("app_pages/notebooks.py", title="Notebooks", icon=":material/edit_note:"),
        st.Page("app_pages/square.py", title="Model square", icon=":material/storefront:"),
        st.Page("app_pages/keys.py", title="API keys & usage", icon=":material/key:"),
        st.Page("app_pages/audit.py", title="Audit trail", icon=":material/history:"),
    ]
).run()
