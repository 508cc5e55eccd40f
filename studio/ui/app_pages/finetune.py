"""Fine-tune: a new job in four steps (base model, dataset, settings with the defaults for the base's size, compute)
with its estimates and whether it fits before it starts; then the jobs, the chosen one followed live (progress, the
loss curve, metrics and samples, logs, events), cancel / resume, and "Deploy this version" once it succeeded.
Everything shown is read from the database, so a reload or a restarted control plane shows the same job."""

from datetime import timedelta
from typing import Any

import streamlit as st

from studio.errors import NotFound
from studio.finetuning import Schedule, Serving
from studio.models import FineTuneCreate, FineTunePreview
from studio.ui import tables
from studio.ui.facade import current
from studio.ui.feedback import flash, guarded
from studio.values import JobStatus, Purpose, Resources

NEW, JOBS = "New fine-tune", "Jobs"
# Settings widgets' keys: cleared when the base or dataset changes, so they take that pair's defaults again.
SETTING_KEYS = [
    f"ft-{k}"
    for k in (
        *("rank", "alpha", "dropout", "targets", "lr", "schedule", "length-by", "epochs", "max-steps", "batch"),
        *("accum", "max-length", "packing", "eval", "seed", "serving", "memory"),
    )
]

studio = current()
st.title("Fine-tune")
if "finetune_view_next" in st.session_state:  # set by an action, before the switch below is drawn
    st.session_state["finetune-view"] = st.session_state.pop("finetune_view_next")
view = st.segmented_control("View", [NEW, JOBS], default=NEW, key="finetune-view", label_visibility="collapsed")


def pick(label: str, options: list[str], key: str, wanted: object) -> str:
    index = options.index(wanted) if wanted in options else 0
    return str(st.selectbox(label, options, index=index, key=key))


def new_job() -> None:
    bases = {m.name: m for m in studio.models() if m.versions}
    found = {d.name: d for d in studio.datasets() if d.versions}
    if not bases or not found:
        st.info("A fine-tune needs a base model and a dataset.")
        st.page_link("app_pages/models.py", label="Add a model", icon=":material/neurology:")
        st.page_link("app_pages/datasets.py", label="Add a dataset", icon=":material/dataset:")
        return

    with st.container(border=True):
        st.subheader("1 · Base model")
        left, right = st.columns(2)
        with left:
            base = bases[pick("Base model", list(bases), "ft-model", st.session_state.get("deploy_model"))]
        base_version = right.selectbox(
            "Version", [v.version for v in reversed(base.versions)], key=f"ft-model-version-{base.name}"
        )
        left.caption(base.description or "")

    with st.container(border=True):
        st.subheader("2 · Dataset")
        left, right = st.columns(2)
        with left:
            dataset = found[pick("Dataset", list(found), "ft-dataset", st.session_state.get("finetune_dataset"))]
        version = right.selectbox(
            "Version",
            list(reversed(dataset.versions)),
            format_func=lambda v: f"v{v.version} · {v.rows} rows · {tables.short_sha(v.sha256)}",
            key=f"ft-dataset-version-{dataset.name}",
        )
        for split, said in version.report.get("splits", {}).items():
            st.caption(f"{split}: {said.get('summary', '')}")
        st.page_link("app_pages/datasets.py", label="See it on the Datasets page", icon=":material/dataset:")

    pools = {u.pool.name: u for u in studio.pools() if u.pool.purpose in (Purpose.TRAIN, Purpose.ANY)}
    if not pools:
        st.warning("No pool is for training: an admin adds one with purpose train or any.", icon=":material/block:")
        return
    request: dict[str, Any] = {
        "name": "preview",
        "model": base.name,
        "model_version": base_version,
        "dataset": dataset.name,
        "dataset_version": version.version,
        "pool": next(iter(pools)),
    }
    chosen = (base.name, base_version, dataset.name, version.version)
    if st.session_state.get("ft-chosen") != chosen:  # a new pair: its defaults, once (the preview reads the base)
        for key in SETTING_KEYS:
            st.session_state.pop(key, None)
        defaults: FineTunePreview | None = None
        with guarded("read the defaults for this base"):
            defaults = studio.finetune_preview(FineTuneCreate.model_validate(request))
        if defaults is None:
            return
        st.session_state["ft-chosen"], st.session_state["ft-defaults"] = chosen, defaults
    defaults = st.session_state["ft-defaults"]
    d = defaults.settings

    with st.container(border=True):
        st.subheader("3 · Settings")
        st.caption(f"Defaults for a base of {defaults.parameters:,} parameters.")
        c = st.columns(4)
        rank = c[0].number_input("LoRA rank", 1, 1024, d.rank, key="ft-rank")
        alpha = c[1].number_input("LoRA alpha", 1, 4096, d.alpha, key="ft-alpha")
        dropout = c[2].number_input("LoRA dropout", 0.0, 0.99, d.dropout, step=0.01, key="ft-dropout")
        lr = c[3].number_input("Learning rate", 1e-7, 1.0, d.learning_rate, format="%.1e", key="ft-lr")
        targets = st.multiselect(
            "Target modules",
            ["all-linear", *defaults.targets],
            default=["all-linear"] if d.target_modules == "all-linear" else list(d.target_modules),
            key="ft-targets",
            help="The base's own linear layers; all-linear: every one but the output head.",
        )
        c = st.columns(4)
        schedule = c[0].selectbox(
            "Schedule", list(Schedule), list(Schedule).index(d.schedule), lambda s: s.value, key="ft-schedule"
        )
        by = c[1].radio("Length by", ["Epochs", "Max steps"], horizontal=True, key="ft-length-by")
        if by == "Epochs":
            epochs, max_steps = c[2].number_input("Epochs", 0.1, 100.0, d.epochs, key="ft-epochs"), None
        else:
            epochs, max_steps = d.epochs, int(c[2].number_input("Max steps", 1, 10**7, 100, key="ft-max-steps"))
        max_length = c[3].number_input("Max length (tokens)", 16, 131072, d.max_length, key="ft-max-length")
        c = st.columns(4)
        batch = c[0].number_input("Batch size", 1, 1024, d.batch_size, key="ft-batch")
        accum = c[1].number_input("Grad accumulation", 1, 1024, d.grad_accum, key="ft-accum")
        eval_fraction = c[2].number_input("Eval fraction", 0.0, 0.49, d.eval_fraction, step=0.05, key="ft-eval")
        seed = c[3].number_input("Seed", 0, 2**31 - 1, d.seed, key="ft-seed")
        pack_col, serve_col = st.columns(2)
        packing = pack_col.toggle("Packing (several short rows in one sequence)", d.packing, key="ft-packing")
        serving = serve_col.radio(
            "Serve the result as",
            list(Serving),
            index=list(Serving).index(d.serving),
            format_func=lambda s: "merged weights (any runtime)" if s == Serving.MERGED else "adapter on its base",
            horizontal=True,
            key="ft-serving",
        )
    settings = {
        "rank": int(rank),
        "alpha": int(alpha),
        "dropout": float(dropout),
        "target_modules": "all-linear" if not targets or "all-linear" in targets else targets,
        "learning_rate": float(lr),
        "schedule": (schedule or d.schedule).value,
        "epochs": float(epochs),
        "max_steps": max_steps,
        "batch_size": int(batch),
        "grad_accum": int(accum),
        "max_length": int(max_length),
        "packing": packing,
        "eval_fraction": float(eval_fraction),
        "seed": int(seed),
        "serving": (serving or d.serving).value,
    }

    with st.container(border=True):
        st.subheader("4 · Compute")
        pool = pools[
            st.selectbox("Pool", list(pools), format_func=lambda p: tables.pool_choice(pools[p]), key="ft-pool")
        ]
        c = st.columns(4)
        cpu = c[0].number_input("CPU cores", 0.1, 1024.0, 1.0, step=0.5, key="ft-cpu")
        memory = c[1].number_input(
            "Memory (MiB)", 64, 10**7, max(1024, -(-defaults.memory_mib // 256) * 256), step=256, key="ft-memory"
        )
        gpus = 0
        if pool.pool.gpu_count:
            gpus = int(c[2].number_input("GPUs", 0, pool.pool.gpu_count, 1, key="ft-gpus"))
        else:
            c[2].caption(f"Pool {pool.pool.name} has no GPUs: it trains on CPU.")

    names = [j.name for j in studio.finetunes()]
    name = st.text_input("Job name", value=tables.free_name(f"{base.name}-{dataset.name}", names), key="ft-name")
    request |= {
        "name": name.strip() or "preview",
        "pool": pool.pool.name,
        "settings": settings,
        "resources": Resources(cpu=cpu, memory_mib=int(memory), gpus=gpus),
    }
    preview: FineTunePreview | None = None
    with guarded("check these settings"):
        preview = studio.finetune_preview(FineTuneCreate.model_validate(request))
    if preview is None:
        return
    c = st.columns(4)
    c[0].metric("Steps", preview.steps)
    c[1].metric("Memory (est.)", f"{preview.memory_mib} MiB")
    c[2].metric("Time (est.)", tables.duration(preview.seconds))
    c[3].metric("Training rows", preview.rows)
    if preview.fits:
        st.caption(f"Fits in pool {pool.pool.name}: free {preview.free}.")
    else:
        st.warning(f"Does not fit in pool {pool.pool.name}: {preview.free}.", icon=":material/block:")
    for warning in preview.warnings:
        st.warning(warning, icon=":material/warning:")
    if st.button(
        "Start fine-tune", type="primary", icon=":material/model_training:", disabled=not preview.fits, key="ft-start"
    ):
        with guarded("start the fine-tune"):
            job = studio.start_finetune(FineTuneCreate.model_validate(request))
            flash(f"Started {job.name}: {job.model} v{job.model_version} on {job.dataset} v{job.dataset_version}.")
            st.session_state["finetune"], st.session_state["finetune_view_next"] = job.name, JOBS
            st.rerun()


@st.fragment(run_every=timedelta(seconds=2))
def live(name: str) -> None:
    """The chosen job as the database has it, every 2 s; a change of status reruns the page (its buttons)."""
    try:
        job = studio.finetune(name)
    except NotFound:
        st.info(f"{name} is gone.")
        return
    if job.status != st.session_state.get("finetune_status"):
        st.session_state["finetune_status"] = job.status
        st.rerun()
    color = tables.JOB_COLORS.get(job.status, "gray")
    cancelling = " (cancelling)" if job.cancelling and not job.status.finished else ""
    st.markdown(f"### {job.name} · :{color}[{job.status.value}]{cancelling}")
    st.caption(
        f"{job.model} v{job.model_version} on {job.dataset} v{job.dataset_version} in pool {job.pool} · attempt "
        f"{job.attempt} · to become {job.target_model}"
        + (f" v{job.result_version}" if job.result_version else " (a new version)")
    )
    if job.message:
        (st.error if job.status == JobStatus.FAILED else st.info)(job.message)
    fraction, said = tables.progress_of(job.progress)
    st.progress(1.0 if job.status == JobStatus.SUCCEEDED else fraction, text=said)
    curve = tables.loss_frame(job.history)
    if not curve.empty:
        st.line_chart(curve, x_label="step", y_label="loss")
    m = job.metrics
    if m:
        c = st.columns(4)
        c[0].metric("Eval loss", f"{m['eval_loss']:.4g}" if m.get("eval_loss") is not None else "–")
        c[1].metric("Perplexity", f"{m['perplexity']:.4g}" if m.get("perplexity") is not None else "–")
        c[2].metric("Train loss", f"{m['train_loss']:.4g}" if m.get("train_loss") is not None else "–")
        c[3].metric("Steps", m.get("steps", 0))
        for sample in m.get("samples", []):
            with st.container(border=True):
                st.markdown(f"**Prompt:** {sample['prompt']}")
                left, right = st.columns(2)
                left.markdown("**Base**")
                left.text(sample["base"])
                right.markdown("**Fine-tuned**")
                right.text(sample["candidate"])


def jobs() -> None:
    found = studio.finetunes()
    if not found:
        st.info("No fine-tune yet: start one under New fine-tune.")
        return
    st.dataframe(tables.finetune_rows(found), hide_index=True, width="stretch")
    names = [j.name for j in found]
    if st.session_state.get("finetune") not in names:
        st.session_state["finetune"] = names[0]
    name = st.selectbox("Fine-tune", names, key="finetune")
    job = studio.finetune(name)
    st.session_state["finetune_status"] = job.status
    live(name)

    c = st.columns(4)
    if (
        job.status == JobStatus.SUCCEEDED
        and job.result_version
        and c[0].button("Deploy this version", type="primary", icon=":material/rocket_launch:", key="ft-deploy")
    ):
        st.session_state["deploy_model"], st.session_state["deploy_version"] = job.target_model, job.result_version
        st.switch_page("app_pages/deploy.py")
    if not job.status.finished and c[1].button(
        "Cancel", icon=":material/stop_circle:", disabled=job.cancelling, key="ft-cancel"
    ):
        with guarded(f"cancel {name}"):
            studio.cancel_finetune(name)
            flash(f"Cancelling {name}: it stops after saving a checkpoint.")
            st.rerun()
    if job.status in (JobStatus.FAILED, JobStatus.CANCELLED) and c[1].button(
        "Resume", icon=":material/play_circle:", key="ft-resume"
    ):
        with guarded(f"resume {name}"):
            resumed = studio.resume_finetune(name)
            flash(f"Resuming {name}: attempt {resumed.attempt}, from its newest checkpoint.")
            st.rerun()
    if job.status.finished:
        with c[3].popover("Delete", icon=":material/delete:"):
            st.write(f"Forget **{name}** and its checkpoints? The version it registered stays.")
            if st.button("Delete", type="primary", key="ft-delete"):
                with guarded(f"delete {name}"):
                    studio.delete_finetune(name)
                    flash(f"Deleted {name}.")
                    st.rerun()

    logs, events, settings = st.tabs(["Logs", "Events", "Settings"])
    with logs:
        lines = []
        with guarded("read the logs"):
            lines = studio.finetune_logs(name, tail=200)
        st.code("\n".join(lines) if lines else "(no log lines yet)", language="log")
        st.button("Refresh logs", key="ft-refresh-logs")
    with events:
        rows = tables.event_rows(studio.finetune_events(name), noun="fine-tune")
        st.dataframe(rows, hide_index=True, width="stretch")
    with settings:
        st.dataframe(tables.settings_rows(job.settings.model_dump(mode="json")), hide_index=True, width="stretch")


if view == JOBS:
    jobs()
else:
    new_job()
