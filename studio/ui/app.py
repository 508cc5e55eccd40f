"""Cove Studio: navigation only. Each page is a file in ``app_pages/`` (so tests can switch to it by path)."""

import streamlit as st

from studio.ui.feedback import show_flash

st.set_page_config(page_title="Cove Studio", page_icon=":material/sailing:", layout="wide")
show_flash()
st.navigation(
    [
        st.Page("app_pages/overview.py", title="Overview", icon=":material/dashboard:", default=True),
        st.Page("app_pages/models.py", title="Models", icon=":material/neurology:"),
        st.Page("app_pages/images.py", title="Images", icon=":material/deployed_code:"),
        st.Page("app_pages/deploy.py", title="Deploy", icon=":material/rocket_launch:"),
        st.Page("app_pages/deployments.py", title="Deployments", icon=":material/dns:"),
        st.Page("app_pages/notebooks.py", title="Notebooks", icon=":material/edit_note:"),
        st.Page("app_pages/keys.py", title="API keys & usage", icon=":material/key:"),
    ]
).run()
