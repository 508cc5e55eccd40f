"""Deployments: live status, the endpoint with code to call it, scale / stop / delete, logs, traffic, events, and
its rate limits, caps and price (changed by whoever may manage it; the price by an admin)."""

from datetime import timedelta

import streamlit as st

from studio.access import may_change
from studio.errors import NotFound
from studio.limits import LimitScope
from studio.prices import plain, show_money
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

use, logs, traffic, events, manage, charges = st.tabs(
    ["Use it", "Logs", "Traffic", "Events", "Scale / stop / delete", "Limits & price"]
)
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

with charges:
    chosen = studio.deployment(name)
    mine = may_change(studio.actor, owner=chosen.owner, group=chosen.group)
    settings = studio.settings
    st.markdown(
        f"**Caps per request**: max_tokens ≤ {chosen.max_tokens_cap or settings.limits_max_tokens}, "
        f"n ≤ {chosen.n_cap or settings.limits_max_n}"
        + ("" if chosen.max_tokens_cap or chosen.n_cap else " (the studio's defaults)")
    )
    limit = next((x for x in studio.limits() if x.scope is LimitScope.DEPLOYMENT and x.subject == name), None)
    if limit is None:
        st.caption("No rate limit on this deployment.")
    else:
        st.markdown(
            f"**Rate limit**: {limit.rpm or '-'} requests/min, {limit.tpm or '-'} tokens/min, "
            f"{limit.concurrency or '-'} at once"
        )
    price = studio.price(name)
    if price is None:
        st.caption("Free: no price set.")
    else:
        st.markdown(
            f"**Price**: {show_money(price.input_per_m, price.currency, places=6)} per million input tokens, "
            f"{show_money(price.output_per_m, price.currency, places=6)} per million output tokens, "
            f"{show_money(price.hourly, price.currency, places=6)} per replica-hour"
            + (f" ({price.gpu})" if price.gpu else "")
        )
        if price.hourly_gpu:
            st.markdown(
                "**Per replica-hour by GPU type** (instead of the above on that type): "
                + ", ".join(f"{show_money(v, price.currency, places=6)} on {g}" for g, v in price.hourly_gpu.items())
            )
    if mine:
        with st.form(f"limits-{name}"):
            st.caption("Rate limit and caps (0: none / the studio's default)")
            c1, c2, c3 = st.columns(3)
            rpm = c1.number_input(
                "Requests a minute", min_value=0, value=(limit and limit.rpm) or 0, key=f"dep-rpm-{name}"
            )
            tpm = c2.number_input(
                "Tokens a minute", min_value=0, value=(limit and limit.tpm) or 0, key=f"dep-tpm-{name}"
            )
            at_once = c3.number_input(
                "Requests at once", min_value=0, value=(limit and limit.concurrency) or 0, key=f"dep-concurrency-{name}"
            )
            c4, c5 = st.columns(2)
            max_tokens = c4.number_input(
                "Most max_tokens", min_value=0, value=chosen.max_tokens_cap or 0, key=f"dep-max-tokens-{name}"
            )
            most_n = c5.number_input("Most n", min_value=0, max_value=128, value=chosen.n_cap or 0, key=f"dep-n-{name}")
            if st.form_submit_button("Save limits", type="primary"):
                with guarded(f"limit {name}"):
                    if rpm or tpm or at_once:
                        studio.set_limit(
                            LimitScope.DEPLOYMENT, name, rpm=int(rpm), tpm=int(tpm), concurrency=int(at_once)
                        )
                    elif limit is not None:
                        studio.delete_limit(LimitScope.DEPLOYMENT, name)
                    studio.set_caps(name, max_tokens_cap=int(max_tokens), n_cap=int(most_n))
                    flash(f"Limits of {name} saved: the gateways apply them at their next refresh.")
                    st.rerun()
    if studio.actor.is_admin:
        with st.form(f"price-{name}"):
            st.caption("Price, in the studio's currency (0: free)")
            p1, p2, p3 = st.columns(3)
            per_in = p1.text_input(
                "Per million input tokens", value=plain(price.input_per_m) if price else "0", key=f"price-in-{name}"
            )
            per_out = p2.text_input(
                "Per million output tokens", value=plain(price.output_per_m) if price else "0", key=f"price-out-{name}"
            )
            hourly = p3.text_input(
                "Per replica-hour", value=plain(price.hourly) if price else "0", key=f"price-hourly-{name}"
            )
            if st.form_submit_button("Save price", type="primary"):
                with guarded(f"price {name}"):
                    studio.set_price(name, input_per_m=per_in, output_per_m=per_out, hourly=hourly)
                    flash(f"Price of {name} saved: requests served from the gateways' next refresh cost it.")
                    st.rerun()
        with st.form(f"price-gpu-{name}"):
            st.caption("Per replica-hour on one GPU type (a pool's GPU model, e.g. H100); 0 removes the type's price")
            g1, g2 = st.columns(2)
            gpu = g1.text_input("GPU type", key=f"price-gpu-type-{name}", placeholder=price.gpu if price else None)
            on_gpu = g2.text_input("Per replica-hour on it", value="0", key=f"price-gpu-hourly-{name}")
            if st.form_submit_button("Save GPU price"):
                with guarded(f"price {name} on {gpu}"):
                    studio.set_gpu_price(name, gpu=gpu, hourly=on_gpu)
                    flash(f"Hourly price of {name} on {gpu.strip()} saved: instance time costs it from the next pass.")
                    st.rerun()
        for gpu_type in price.hourly_gpu if price else {}:
            if st.button(f"Remove the {gpu_type} price", key=f"price-gpu-remove-{name}-{gpu_type}"):
                with guarded(f"price {name} on {gpu_type}"):
                    studio.set_gpu_price(name, gpu=gpu_type, hourly="0")
                    flash(f"{name} on {gpu_type} costs its hourly price again.")
                    st.rerun()
