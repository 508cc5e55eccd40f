"""The model square: every model a member may call through the gateway, with its price, the rate limits that apply
to them, its context length, a link to try it in the playground and the code to call it with their key."""

import streamlit as st

from studio.ui.facade import current

studio = current()
st.title("Model square")
st.caption("The models you may call through the gateway, what they cost and how much you may ask of them.")

found = studio.square()
if not found:
    st.info("There is no model you may call yet: ask an admin to share a deployment with one of your groups.")
    st.stop()

st.dataframe(
    [
        {
            "model": o.name,
            "serves": o.model,
            "status": o.status,
            "input": o.input_per_m,
            "output": o.output_per_m,
            "dedicated": o.hourly,
            "context (tokens)": o.context,
            "your limits": o.limits,
        }
        for o in found
    ],
    hide_index=True,
    width="stretch",
)

chosen = st.selectbox("Model", [o.name for o in found], key="square-model")
st.link_button(
    f"Try {chosen} in the playground",
    studio.playground_url,
    icon=":material/chat:",
    help=f"Opens the playground; choose {chosen} there.",
)
st.code(studio.snippet(chosen), language="python")
