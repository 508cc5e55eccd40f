"""Models: the catalog with its versions, adding a model from a folder or the Hugging Face Hub, a version's card."""

import streamlit as st

from studio.gate import Results
from studio.modelstore import human_size
from studio.ui import tables
from studio.ui.facade import current
from studio.ui.feedback import guarded

studio = current()
st.title("Models")
catalog = studio.models()

with st.expander("Add a model", icon=":material/add:", expanded=not catalog):
    with st.form("add-model"):
        name = st.text_input(
            "Name", key="new-model-name", placeholder="qwen-chat", help="Lowercase letters, digits and dashes."
        )
        source = st.text_input(
            "Source",
            key="new-model-source",
            placeholder="Qwen/Qwen2.5-0.5B-Instruct  or  /data/models/my-model",
            help="A Hugging Face repo id (org/name, optionally @revision) or a folder on this machine.",
        )
        description = st.text_input("Description (optional)")
        new_version = st.checkbox("Add as a new version of an existing model", key="new-model-version")
        submitted = st.form_submit_button("Add model", type="primary")
    if submitted:
        with guarded("add the model"), st.status(f"Adding {name or 'the model'} …", expanded=True) as status:
            bar = st.progress(0.0, text="waiting for the download to start")

            def on_bytes(done: int, total: int) -> None:
                if total:
                    bar.progress(min(1.0, done / total), text=f"{human_size(done)} of {human_size(total)}")

            added = studio.add_model(
                name=name.strip(),
                source=source.strip(),
                description=description,
                new_version=new_version,
                progress=st.write,
                on_bytes=on_bytes,
            )
            bar.progress(1.0, text="done")
            status.update(label=f"Added {added.name} v{added.versions[-1].version}", state="complete")
            catalog = studio.models()

if not catalog:
    st.info("The catalog is empty: add a model above.")
    st.stop()
st.dataframe(tables.model_rows(catalog), hide_index=True, width="stretch")

st.subheader("Versions")
by_name = {m.name: m for m in catalog}
chosen = by_name[st.selectbox("Model", list(by_name), key="model")]
st.session_state["deploy_model"] = chosen.name  # the Deploy page starts from the model looked at last
version = st.selectbox(
    "Version",
    list(reversed(chosen.versions)),
    format_func=lambda v: f"v{v.version} · {v.architecture or v.model_type or 'unknown'} · {human_size(v.size_bytes)}",
)
if version is not None:
    st.caption(f"{version.source_kind}: {version.source}" + (f" @ {version.revision}" if version.revision else ""))
    if version.adapter_of:
        st.caption(f"An adapter, served on {version.adapter_of}.")
    if version.lineage:
        with st.container(border=True):
            st.markdown("**Lineage** · made by Cove")
            for line in tables.lineage_lines(version.lineage):
                st.markdown(line)
            with st.expander("Settings"):
                st.dataframe(tables.settings_rows(version.lineage.get("settings", {})), hide_index=True)
            if st.button(f"See the job {version.lineage['job']}", icon=":material/model_training:", key="lineage-job"):
                st.session_state["finetune"], st.session_state["finetune_view_next"] = version.lineage["job"], "Jobs"
                st.switch_page("app_pages/finetune.py")
    evaluated = studio.evaluations_of(chosen.name, version.version)
    with st.expander(f"Evaluations ({len(evaluated)})", expanded=bool(evaluated)):
        if not evaluated:
            st.caption(
                f"None yet: `cove eval run {chosen.name}:{version.version} --dataset D --deployment DEP "
                "--scorer exact_match`"
            )
        else:
            st.dataframe(tables.evaluation_rows(evaluated), hide_index=True, width="stretch")
            picked = st.selectbox(
                "Examples of", [e.id for e in evaluated], key="evaluation", format_func=lambda i: f"evaluation {i}"
            )
            shown = studio.evaluation(picked)
            if shown.message and shown.status.finished and not shown.summary:
                st.error(shown.message)
            st.dataframe(tables.example_rows(shown), hide_index=True, width="stretch")
    files = studio.model_files(version)
    card, config = st.tabs(["Model card", "Config"])
    card.markdown(files.card or "_This version has no model card (README.md)._")
    config.json(files.config or {"note": f"no readable config.json in {version.path}"})

st.subheader("Aliases and promotion")
st.markdown(f"**{chosen.name}**: {tables.alias_words(chosen.aliases) or 'no alias set yet'}")
st.caption(f"Gate: {chosen.gate.describe()}")
if chosen.gate_failing is not None:
    marked = chosen.gate_failing
    st.error(
        f"Production v{marked.version} fails its gate since {marked.since:%Y-%m-%d %H:%M} (evaluation "
        f"{marked.evaluation}): " + "; ".join(f"{c['name']}: {c['detail']}" for c in marked.checks),
        icon=":material/warning:",
    )
candidate = st.selectbox(
    "Version to promote",
    [v.version for v in reversed(chosen.versions)],
    format_func=lambda v: f"v{v}",
    key="promote-version",
)
production = chosen.aliases.get("production")
results: dict[int, Results] = {}
if chosen.gate.evaluation is None:  # no evaluation set: the scores are typed in
    metrics = sorted(chosen.gate.minimums)
    scores = {m: st.number_input(f"v{candidate} {m}", value=None, key=f"score-{m}") for m in metrics}
    base = {}
    if production is not None and production != candidate and chosen.gate.max_drop is not None:
        base = {m: st.number_input(f"production v{production} {m}", value=None, key=f"base-{m}") for m in metrics}
    results[candidate] = Results({m: v for m, v in scores.items() if v is not None}, None, "entered in the studio")
    if base and production is not None:
        results[production] = Results({m: v for m, v in base.items() if v is not None}, None, "entered in the studio")
else:
    st.caption(f"Scores are read from each version's newest evaluation on {chosen.gate.evaluation.describe()}.")
SLO_FROM = {"from its benchmark runs": None, "met": True, "missed": False}
said = (
    st.radio(f"v{candidate} and {chosen.gate.slo}", list(SLO_FROM), horizontal=True, key="slo-met")
    if chosen.gate.slo
    else None
)
if said is not None and SLO_FROM[said] is not None:
    scored = results.get(candidate, Results())
    results[candidate] = Results(scored.scores, SLO_FROM[said], scored.source, "entered in the studio")
verdict, _ = studio.judge(chosen.name, candidate, results)
if verdict.checks:
    st.dataframe(tables.check_rows(verdict.checks), hide_index=True, width="stretch")
st.caption(f"The gate: {verdict.describe()}")
promote_col, staging_col, rollback_col = st.columns(3)
with promote_col:
    if st.button(f"Promote v{candidate} to production", type="primary", key="promote", disabled=not verdict.passed):
        with guarded(f"promote {chosen.name} v{candidate}"):
            done = studio.promote(chosen.name, candidate, results)
            st.toast(f"{chosen.name}@production → v{done.version}")
            st.rerun()
    if not verdict.passed and studio.actor.is_admin:
        reason = st.text_input("Override reason (admins)", key="override-reason")
        if st.button("Promote past the gate", key="override", disabled=not reason.strip()):
            with guarded(f"promote {chosen.name} v{candidate}"):
                studio.promote(chosen.name, candidate, results, override_reason=reason)
                st.rerun()
with staging_col:
    if st.button(f"Set staging to v{candidate}", key="set-staging"):
        with guarded(f"move {chosen.name}@staging"):
            studio.set_staging(chosen.name, candidate)
            st.rerun()
with rollback_col:
    if st.button("Roll back production", key="rollback", disabled=production is None):
        with guarded(f"roll back {chosen.name}"):
            done = studio.rollback(chosen.name)
            st.toast(f"{chosen.name}@production → v{done.version} (rolled back from v{done.previous})")
            st.rerun()
with st.expander("Alias history"):
    st.dataframe(
        [m.model_dump(mode="json") for m in studio.alias_history(chosen.name)], hide_index=True, width="stretch"
    )

left, right = st.columns(2)
with left:
    st.page_link("app_pages/deploy.py", label=f"Deploy {chosen.name}", icon=":material/rocket_launch:")
with right, st.popover("Delete model", icon=":material/delete:"):
    st.write(f"Remove **{chosen.name}** and its versions from the catalog? Files in the model cache stay.")
    if st.button("Delete", type="primary", key="delete-model"):
        with guarded(f"delete {chosen.name}"):
            studio.delete_model(chosen.name)
            st.rerun()
