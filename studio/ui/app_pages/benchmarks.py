"""Benchmarks: serving benchmark runs per deployment and model version; a sweep's latency against the offered rate
with the SLO, the knee and the max sustainable rate marked; two runs compared side by side."""

import pandas as pd
import streamlit as st

from studio.ui import benchmark_tables as view
from studio.ui.facade import current
from studio.ui.feedback import guarded

studio = current()
st.title("Benchmarks")
runs = studio.benchmarks()
if not runs:
    st.info(
        "No benchmark runs yet: `cove bench DEPLOYMENT --slo p99_e2el_ms<=2000` sweeps for the largest rate that "
        "meets the SLO, and keeps the result here.",
        icon=":material/info:",
    )
    st.stop()

names = sorted({r.deployment for r in runs})
deployment = st.selectbox("Deployment", ["all", *names], key="bench-deployment")
versions = sorted({f"{r.model} v{r.model_version}" for r in runs if deployment in ("all", r.deployment)})
version = st.selectbox("Model version", ["all", *versions], key="bench-version")
shown = [r for r in runs if deployment in ("all", r.deployment) and version in ("all", f"{r.model} v{r.model_version}")]
st.dataframe(view.run_rows(shown), hide_index=True, width="stretch")

st.subheader("A run")
by_id = {r.id: r for r in shown}
picked = st.selectbox("Run", list(by_id), format_func=lambda i: f"run {i}: {by_id[i].spec.words()}", key="bench-run")
run = by_id[picked] if picked is not None else None
if run is not None and run.result is None:
    st.caption(run.message or run.progress or f"{run.status.value}: no result yet")
elif run is not None and run.result is not None:
    result = run.result
    metric, rows = view.chart_rows(result)
    if rows:
        marks = view.marks(result)
        st.markdown(f"**{metric.upper()} against the offered rate** (P50 and P99, ms)")
        try:
            import altair as alt

            base = alt.Chart(pd.DataFrame(rows)).mark_line(point=True)
            lines = base.encode(x=alt.X("rate:Q", title="offered rate (req/s)"), y=alt.Y("ms:Q", title="ms"),
                                color="statistic:N")  # fmt: skip
            layers = [lines]
            if marks["slo_ms"] is not None:
                layers.append(alt.Chart(pd.DataFrame([{"ms": marks["slo_ms"]}])).mark_rule(strokeDash=[4, 4])
                              .encode(y="ms:Q"))  # fmt: skip
            rules = [{"rate": marks[k], "mark": label} for k, label in (("knee", "knee"), ("max_rate", "max rate"))]
            rules = [r for r in rules if r["rate"] is not None]
            if rules:
                layers.append(alt.Chart(pd.DataFrame(rules)).mark_rule(color="gray").encode(x="rate:Q",
                              tooltip=["mark:N", "rate:Q"]))  # fmt: skip
            st.altair_chart(alt.layer(*layers), width="stretch")
        except ImportError:  # altair is Streamlit's own dependency, but a slim install may lack it
            st.line_chart(pd.DataFrame(rows).pivot(index="rate", columns="statistic", values="ms"))
        said = [f"SLO limit {marks['slo_ms']:g} ms"] if marks["slo_ms"] is not None else []
        said.append(f"knee at {marks['knee']:g} req/s" if marks["knee"] is not None else "no knee seen")
        top = marks["max_rate"]
        said.append(f"max sustainable rate {top:g} req/s" if top is not None else "no rate met the SLO")
        st.caption(" · ".join(said), help="The knee: the rate after which P99 rises most steeply.")
    if result.sweep is not None:
        (st.success if result.sweep.confident else st.warning)(result.sweep.statement)
    st.dataframe(view.step_rows(result), hide_index=True, width="stretch")

st.subheader("Compare two runs")
ended = [r.id for r in shown if r.result is not None]
if len(ended) < 2:
    st.caption("Two runs with results are needed.")
else:
    left, right = st.columns(2)
    a = left.selectbox("A", ended, index=1, format_func=lambda i: f"run {i}", key="bench-a")
    b = right.selectbox("B", ended, index=0, format_func=lambda i: f"run {i}", key="bench-b")
    with guarded("compare the runs"):
        st.dataframe(view.difference_rows(studio.compare_benchmarks(a, b)), hide_index=True, width="stretch")
