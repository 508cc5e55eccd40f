"""Datasets: register one (an uploaded file, a Hugging Face dataset, or for admins a folder on the server) with its
format and column map checked before it is added; the versions; for a chosen version its validation report, rows as
chat messages, token lengths against a base model and what is trained on; delete."""

import streamlit as st

from studio.chats import DEFAULT_COLUMNS, OPTIONAL, Format
from studio.models import DatasetCreate
from studio.ui import tables
from studio.ui.facade import current
from studio.ui.feedback import flash, guarded

studio = current()
st.title("Datasets")
found = studio.datasets()

# ------------------------------------------------------------------------------------------------------- add
with st.expander("Add a dataset", icon=":material/add:", expanded=not found):
    kinds = ["Upload a file", "Hugging Face dataset"] + (["Folder on the server"] if studio.actor.is_admin else [])
    kind = st.radio("From", kinds, horizontal=True, key="dataset-kind")
    left, right = st.columns(2)
    name = left.text_input("Name", key="dataset-name", placeholder="support-chats", help="Lowercase, digits, dashes.")
    description = right.text_input("Description (optional)", key="dataset-description")
    new_version = st.checkbox("Add as a new version of an existing dataset", key="dataset-new-version")
    fmt: str | None = None
    columns: dict[str, str] = {}
    upload = None
    wrong: dict[str, str] = {}
    if kind == "Upload a file":
        uploaded = st.file_uploader(
            "Chat data", type=["jsonl", "json", "csv", "parquet"], key="dataset-file", help="One row per conversation."
        )
        if uploaded is not None:
            body = uploaded.getvalue()
            sniffed = None
            with guarded(f"read {uploaded.name}"):
                sniffed = studio.sniff_upload(uploaded.name, body)
            if sniffed is not None:
                upload = (uploaded.name, body)
                st.caption(
                    f"Columns of its first row: {', '.join(sniffed.columns) or 'none'} · "
                    + (
                        f"detected format: **{sniffed.detected.format.value}**"
                        if sniffed.detected
                        else "no format fits"
                    )
                )
                formats = list(Format)
                chosen = st.selectbox(
                    "Format",
                    formats,
                    index=formats.index(sniffed.detected.format) if sniffed.detected else 0,
                    format_func=lambda f: f.value,
                    key="dataset-format",
                )
                choices = [tables.NO_COLUMN, *sniffed.columns]
                mapping = {}
                for part, default in DEFAULT_COLUMNS[chosen].items():
                    label = f"{part} ← column" + (" (optional)" if part in OPTIONAL else "")
                    picked = default if default in sniffed.columns else tables.NO_COLUMN
                    mapping[part] = st.selectbox(
                        label, choices, index=choices.index(picked), key=f"dataset-column-{chosen.value}-{part}"
                    )
                wrong = tables.column_problems(chosen, mapping, sniffed.columns)
                for part, why in wrong.items():
                    st.error(f"{part}: {why}", icon=":material/error:")
                fmt, columns = chosen.value, tables.chosen_columns(mapping)
        source = upload[0] if upload else ""
    else:
        hub = kind == "Hugging Face dataset"
        hint = "org/name, optionally @revision" if hub else "/data/chats or /data/chats.jsonl"
        source = st.text_input("Source", key="dataset-source", placeholder=hint).strip()
        if hub and source and not source.startswith("hf:"):
            source = "hf:" + source
        st.caption("The format and columns are detected from the first file once it is fetched.")
    ready = bool(name.strip()) and bool(source) and not wrong
    if st.button("Register dataset", type="primary", disabled=not ready, key="register-dataset"):
        with guarded("add the dataset"), st.status(f"Adding {name} …", expanded=True) as status:
            data = DatasetCreate(
                name=name.strip(),
                description=description,
                source=source,
                format=fmt,
                columns=columns,
                new_version=new_version,
            )
            added = studio.add_dataset(data, upload=upload, progress=st.write)
            said = "unchanged: the newest version has this content" if added.unchanged else "added"
            status.update(label=f"{added.dataset.name} v{added.version} {said}", state="complete")
            flash(f"{added.dataset.name} v{added.version} {said}.")
            st.session_state["dataset"] = added.dataset.name
            st.rerun()

if not found:
    st.info("There is no dataset yet: add one above.")
    st.stop()
st.dataframe(tables.dataset_rows(found), hide_index=True, width="stretch")

# ------------------------------------------------------------------------------------------------ one version
by_name = {d.name: d for d in found}
if st.session_state.get("dataset") not in by_name:
    st.session_state["dataset"] = found[0].name
pick, which = st.columns(2)
dataset = by_name[pick.selectbox("Dataset", list(by_name), key="dataset")]
version = which.selectbox(
    "Version",
    list(reversed(dataset.versions)),
    format_func=lambda v: f"v{v.version} · {v.rows} rows · {tables.short_sha(v.sha256)}",
    key=f"dataset-version-{dataset.name}",
)
if version is None:
    st.stop()
st.caption(
    f"{version.source_kind}: {version.source}"
    + (f" @ {version.revision}" if version.revision else "")
    + f" · {version.format} · columns {version.columns} · sha256 {version.sha256}"
)
report_tab, rows_tab, lengths_tab, delete_tab = st.tabs(["Report", "Rows", "Token lengths", "Delete"])

with report_tab:
    for split, said in version.report.get("splits", {}).items():
        st.markdown(f"**{split}** · {said.get('summary', '')}")
        line = st.columns(4)
        line[0].metric("Rows", said.get("rows", 0))
        line[1].metric("Fit to train on", said.get("valid", 0))
        line[2].metric("Duplicates", said.get("duplicates", 0))
        line[3].metric("Also in train", said.get("shared_with_train", 0))
        if said.get("problems"):
            st.dataframe(tables.problem_rows(said), hide_index=True, width="stretch")
            more = tables.problems_left_out(said)
            if more:
                st.caption(f"… and {more} more problem{'s' if more != 1 else ''}, not listed.")

with rows_tab:
    split = st.selectbox("Split", list(version.splits), key="preview-split")
    shown = None
    with guarded("preview the rows"):
        shown = studio.dataset_preview(dataset.name, version.version, split=split, rows=5)
    for row in shown.rows if shown else []:
        with st.container(border=True):
            st.caption(f"line {row.line}")
            if row.messages is None:
                st.warning(row.problem or "not fit to train on", icon=":material/warning:")
                st.code(str(row.raw))
                continue
            for message in row.messages:
                with st.chat_message(message["role"]):
                    st.text(message["content"])

with lengths_tab:
    bases = {m.name: m for m in studio.models() if m.versions}
    if not bases:
        st.info("Token lengths are counted with a base model's chat template: add a model first.")
    else:
        a, b, c = st.columns(3)
        base = bases[a.selectbox("Base model", list(bases), key="lengths-model")]
        base_version = b.selectbox(
            "Its version", [v.version for v in reversed(base.versions)], key=f"lengths-version-{base.name}"
        )
        max_length = int(c.number_input("Max length (tokens)", min_value=16, value=1024, step=64, key="lengths-max"))
        # Counting renders every row through the template (seconds for 100k rows): only when asked.
        counting = st.toggle("Count token lengths", key="lengths-on")
        measured = None
        if counting:
            with guarded("count the token lengths"):
                measured = studio.dataset_lengths(
                    dataset.name, version.version, model=base.name, model_version=base_version, max_length=max_length
                )
        if measured is not None:
            s = measured.stats
            cols = st.columns(7)
            for col, (label, value) in zip(
                cols,
                [
                    ("P50", s.p50),
                    ("P95", s.p95),
                    ("P99", s.p99),
                    ("Max", s.max),
                    ("Truncated", s.truncated),
                    ("Dropped", s.dropped),
                    ("Nothing trained", s.untrainable),
                ],
                strict=True,
            ):
                col.metric(label, value)
            st.bar_chart(tables.length_frame(s), x_label="tokens", y_label="rows")
            st.markdown("**What is trained on** (highlighted; struck through: cut off at the max length)")
            sample = None
            with guarded("render the rows"):
                sample = studio.dataset_preview(
                    dataset.name,
                    version.version,
                    rows=3,
                    model=base.name,
                    model_version=base_version,
                    max_length=max_length,
                )
            for row in sample.rows if sample else []:
                if row.segments:
                    st.markdown(tables.segments_html(row.segments), unsafe_allow_html=True)

with delete_tab:
    st.write(f"Delete **{dataset.name}** and all its versions? Refused while a fine-tune uses one of them.")
    if st.button("Delete dataset", key="delete-dataset", icon=":material/delete:"):
        with guarded(f"delete {dataset.name}"):
            studio.delete_dataset(dataset.name)
            flash(f"Deleted {dataset.name}.")
            st.rerun()

st.session_state["finetune_dataset"] = dataset.name  # the Fine-tune page starts from the dataset looked at last
st.page_link("app_pages/finetune.py", label=f"Fine-tune on {dataset.name}", icon=":material/model_training:")
