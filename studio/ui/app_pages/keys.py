"""API keys and usage: create a key (its secret is shown once) — with API scopes, a personal access token for the
Cove API, and rate limits — revoke one, the limits that apply to the member's keys (and remove one), tokens per key
per day, and a month's statement (and budgets) of the user or one of their groups."""

import streamlit as st

from studio.access import SCOPES
from studio.limits import LimitScope
from studio.prices import show_money
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
    rpm_col, tpm_col, at_once_col = st.columns(3)
    limit = {
        "rpm": rpm_col.number_input("Requests a minute (0: no limit)", min_value=0, value=0, key="key-rpm"),
        "tpm": tpm_col.number_input("Tokens a minute (0: no limit)", min_value=0, value=0, key="key-tpm"),
        "concurrency": at_once_col.number_input(
            "Requests at once (0: no limit)", min_value=0, value=0, key="key-concurrency"
        ),
    }
    created = st.form_submit_button("Create key", type="primary")
if created:
    with guarded("create the key"):
        made = studio.create_key(
            key_name.strip(),
            deployments=scope,
            days=int(days),
            scopes=api_scopes,
            limit={k: int(v) for k, v in limit.items()},
        )
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

st.subheader("Rate limits on your keys")
yours = {k.name for k in found}
key_limits = [x for x in studio.limits() if x.scope is LimitScope.KEY and x.subject in yours]
if key_limits:
    st.dataframe(
        [
            {
                "key": x.subject,
                "requests/min": str(x.rpm or "-"),  # text: a column of numbers and "-" alike
                "tokens/min": str(x.tpm or "-"),
                "at once": str(x.concurrency or "-"),
            }
            for x in key_limits
        ],
        hide_index=True,
        width="stretch",
    )
    left, right = st.columns([3, 1], vertical_alignment="bottom")
    unlimited = left.selectbox("Key to unlimit", [x.subject for x in key_limits], key="unlimit-key")
    if right.button("Remove its limits", icon=":material/remove_circle:", key="unlimit"):
        with guarded(f"remove the limits of {unlimited}"):
            studio.delete_limit(LimitScope.KEY, unlimited)
            flash(f"Limits of {unlimited} removed: the gateways stop applying them at their next refresh.")
            st.rerun()
else:
    st.caption("None of your keys is limited (limits on you, your groups and deployments still apply).")

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

st.subheader("Statement")
left, middle, right = st.columns(3)
whose = left.selectbox(
    "Of",
    [f"user {studio.actor.name}", *(f"group {g}" for g in sorted(studio.actor.groups))],
    key="statement-of",
)
month = middle.text_input("Month (YYYY-MM)", value=f"{studio.now:%Y-%m}", key="statement-month")
with guarded("read the statement"):
    kind, subject = whose.split(" ", 1)
    bill = studio.statement("user" if kind == "user" else "group", subject, month.strip())
    right.metric("Total", show_money(bill.cost_micros, bill.currency))
    if bill.lines:
        st.dataframe(
            [
                {
                    "deployment": x.name,
                    "requests": x.requests,
                    "prompt tokens": x.prompt_tokens,
                    "completion tokens": x.completion_tokens,
                    "cost": show_money(x.cost_micros, x.currency),
                }
                for x in bill.lines
            ],
            hide_index=True,
            width="stretch",
        )
    if bill.instances:
        st.dataframe(
            [
                {
                    "deployment (dedicated)": x.deployment,
                    "GPU": x.gpu or "-",
                    "instance hours": round(x.replica_hours, 4),
                    "hourly": show_money(x.hourly_micros, x.currency),
                    "cost": show_money(x.cost_micros, x.currency),
                }
                for x in bill.instances
            ],
            hide_index=True,
            width="stretch",
        )
    if not bill.lines and not bill.instances:
        st.caption(f"Nothing billed to {whose} in {bill.month}.")
mine = studio.budgets()
if mine:
    st.dataframe(
        [
            {
                "budget of": f"{b.scope.value} {b.subject}",
                "a month": f"{b.amount} tokens" if b.unit.value == "tokens" else show_money(b.amount, b.currency),
                "spent": f"{b.spent} tokens" if b.unit.value == "tokens" else show_money(b.spent, b.currency),
                "warns at": f"{b.warn_at}%",
                "standing": b.standing,
            }
            for b in mine
        ],
        hide_index=True,
        width="stretch",
    )
