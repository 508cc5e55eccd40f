"""Deploy: the one-click path in four steps — config, compute, image, replicas. The defaults deploy the model at once;
what does not fit (a full pool, a runtime this machine cannot run) is marked with the reason and blocks the button."""

import shlex

import streamlit as st

from studio import memplan, sizing
from studio.modelstore import human_size
from studio.ui import tables
from studio.ui.facade import current
from studio.ui.feedback import flash, guarded
from studio.values import Autoscale, Resources, RuntimeKind, Sharing

studio = current()
st.title("Deploy a model")

catalog = {m.name: m for m in studio.models() if m.versions}
if not catalog:
    st.info("There is no model to deploy yet.")
    st.page_link("app_pages/models.py", label="Add a model", icon=":material/neurology:")
    st.stop()

# ------------------------------------------------------------------------------------------------- 1 · config
with st.container(border=True):
    st.subheader("1 · Config")
    names = list(catalog)
    wanted = st.session_state.get("deploy_model")
    model = catalog[st.selectbox("Model", names, index=names.index(wanted) if wanted in names else 0, key="model")]
    versions = list(reversed(model.versions))
    wanted_version = st.session_state.get("deploy_version") if model.name == wanted else None
    version = st.selectbox(
        "Version",
        versions,
        index=next((i for i, v in enumerate(versions) if v.version == wanted_version), 0),
        format_func=lambda v: f"v{v.version} · {v.architecture or v.model_type} · {human_size(v.size_bytes)}",
    )
    name = st.text_input(
        "Deployment name",
        value=tables.free_name(model.name, studio.deployment_names()),
        key=f"name-{model.name}",
        help="Requests name it as their model. Lowercase letters, digits and dashes.",
    )
    runtime_args = st.text_input(
        "Runtime args (optional)",
        key="runtime-args",
        placeholder="--dtype float32",
        help="Extra flags for the model server.",
    )

# ------------------------------------------------------------------------------------------------ 2 · compute
with st.container(border=True):
    st.subheader("2 · Compute")
    pools = {u.pool.name: u for u in studio.pools()}
    pool = pools[st.selectbox("Pool", list(pools), format_func=lambda p: tables.pool_choice(pools[p]), key="pool")].pool
    cpu_col, mem_col = st.columns(2)
    cpu = cpu_col.number_input("CPU cores per replica", key="cpu", min_value=0.1, max_value=1024.0, value=1.0, step=0.5)
    memory = mem_col.number_input("Memory per replica (MiB)", key="memory", min_value=64, value=2048, step=256)
    gpus = gpu_memory = gpu_cores = 0
    images = studio.images()
    default = RuntimeKind.VLLM.value if pool.gpu_count else RuntimeKind.TRANSFORMERS.value
    runtime = next((i.runtime for i in images if i.name == st.session_state.get("image", default)), None)
    try:
        user_args = shlex.split(runtime_args)
    except ValueError:
        user_args = []
    shape, unplanned, context, concurrency = None, "", 0, 0
    if pool.gpu_count and runtime in memplan.PLANNED_RUNTIMES and version is not None:
        shape, unplanned = studio.model_shape(model.name, version.version)
    if shape is not None:
        context_col, concurrency_col = st.columns(2)
        context = int(
            context_col.number_input(
                "Context length (tokens per request)",
                min_value=256,
                max_value=shape.max_context or memplan.UNKNOWN_MAX_CONTEXT,
                value=sizing.default_context(shape),
                step=1024,
                key=f"context-{model.name}-{version.version}",
            )
        )
        concurrency = int(concurrency_col.number_input("Target concurrency (0: what fits)", min_value=0, key="conc"))

    def planned(res: Resources, *, asked: int | None = None) -> memplan.Plan | None:
        """The plan of ``res`` at the chosen context (and ``asked`` requests at once), None when not planned."""
        if shape is None or runtime not in memplan.PLANNED_RUNTIMES:
            return None
        hw = sizing.hardware_for(
            pool, res, runtime=RuntimeKind(runtime), args=user_args, context=context, concurrency=asked
        )
        return memplan.plan(shape, hw) if hw else None

    def holds_none(res: Resources) -> str:
        """Why ``res`` cannot hold one request at the context ('' if it can, or is not planned)."""
        one = planned(res)
        return one.reason if one is not None and not one.fits else ""

    if pool.gpu_count:
        modes = ["Whole GPUs", "GPU memory slice"] if pool.sharing == Sharing.HAMI else ["Whole GPUs"]
        mode = st.radio("GPU", modes, horizontal=True, key="gpu-mode")
        if mode == "Whole GPUs":
            free_gpus = pools[pool.name].free.gpus
            gpus = st.selectbox(
                "GPUs per replica",
                list(range(1, pool.gpu_count + 1)),
                key="gpus",
                format_func=lambda n: (
                    f"{n}"
                    + ("" if n <= free_gpus else f" — does not fit: {free_gpus} free")
                    + (f" — cannot hold one request of {context:,} tokens" if holds_none(Resources(gpus=n)) else "")
                ),
            )
        else:
            gpu_memory = st.number_input(
                f"GPU memory per replica (MiB, multiples of {pool.slice_mib})",
                min_value=pool.slice_mib,
                max_value=pool.gpu_memory_mib,
                value=max(pool.slice_mib, min(8192, pool.gpu_memory_mib)),
                step=pool.slice_mib,
                key="gpu-memory",
            )
            gpu_cores = st.slider("GPU cores (% of one GPU; 0: no limit)", 0, 100, 0)
    else:
        st.caption(f"Pool {pool.name} has no GPUs: the model runs on CPU.")
    resources = Resources(
        cpu=cpu, memory_mib=int(memory), gpus=gpus, gpu_memory_mib=int(gpu_memory), gpu_cores=gpu_cores
    )
    plan = planned(resources, asked=concurrency or None)
    if plan is not None:
        one = planned(resources)
        with st.container(border=True, key="memory-plan"):
            st.markdown("**Memory plan**" + ("" if one and one.fits else " — cannot hold one request"))
            weights_col, kv_col, tokens_col, at_once_col = st.columns(4)
            weights_col.metric("Weights per GPU", f"{plan.weights_mib_per_gpu:,.0f} MiB")
            kv_col.metric("KV cache per GPU", f"{max(plan.kv_cache_mib_per_gpu, 0):,.0f} MiB")
            tokens_col.metric("KV tokens", f"{plan.kv_cache_tokens:,}")
            at_once_col.metric(f"Requests of {plan.context:,} tokens", f"{plan.max_concurrency}")
            if plan.fits:
                st.caption("Runtime flags: " + " ".join(sizing.with_flags(user_args, plan.flags)[len(user_args) :]))
            elif one is not None and one.fits:
                st.caption(f"Target concurrency out of reach: {plan.reason}")
            if one is not None and not one.fits:
                shape_ = shape
                assert shape_ is not None
                hw = sizing.hardware_for(pool, resources, runtime=RuntimeKind(plan.runtime), args=user_args,
                                         context=context)  # fmt: skip
                if hw is not None:
                    st.caption(f"It {sizing.what_fits(shape_, pool, hw)}.")
    elif unplanned:
        st.caption(f"No memory plan: {unplanned}")

# -------------------------------------------------------------------------------------------------- 3 · image
with st.container(border=True):
    st.subheader("3 · Image")
    problems = {i.name: studio.local_problem(i, resources) for i in images}
    image_names = list(dict.fromkeys(i.name for i in images))
    image_name = st.selectbox(
        "Runtime image",
        image_names,
        key="image",
        index=image_names.index(default) if default in image_names else 0,
        format_func=lambda n: n + (f" — {problems[n]}" if problems[n] else ""),
    )
    image = st.selectbox(
        "Version",
        [i for i in images if i.name == image_name],
        format_func=lambda i: f"{i.version} · {i.reference}",
    )

# ----------------------------------------------------------------------------------------------- 4 · replicas
with st.container(border=True):
    st.subheader("4 · Replicas")
    autoscaled = st.toggle("Autoscale on requests in flight", key="autoscale")
    autoscale = None
    if autoscaled:
        low, high, target = st.columns(3)
        min_replicas = low.number_input("Fewest replicas", min_value=0, value=1, key="min-replicas")
        max_replicas = high.number_input("Most replicas", min_value=1, value=3, key="max-replicas")
        target_inflight = target.number_input("Requests in flight per replica", min_value=0.5, value=4.0, step=0.5)
        autoscale = Autoscale(
            min_replicas=int(min_replicas), max_replicas=int(max_replicas), target_inflight=target_inflight
        )
        replicas = int(min_replicas)
    else:
        replicas = int(st.number_input("Replicas", min_value=1, max_value=64, value=1, key="replicas"))

# ------------------------------------------------------------------------------------------------------ deploy
blockers = []
fit = studio.fit(pool=pool.name, resources=resources, replicas=replicas)
if not fit.fits:
    blockers.append(f"Does not fit in pool {pool.name}: {fit.reason}. Free: {fit.free.describe()}.")
one_request = planned(resources)
if one_request is not None and not one_request.fits:
    blockers.append(f"The model does not fit: {one_request.reason}.")
if image is not None and problems[image.name]:
    blockers.append(f"Image {image.name} cannot run here: {problems[image.name]}.")
for blocker in blockers:
    st.warning(blocker, icon=":material/block:")

if st.button(
    "Deploy", type="primary", icon=":material/rocket_launch:", disabled=bool(blockers) or image is None, key="deploy"
):
    with guarded("deploy"):
        asked_args = runtime_args
        if one_request is not None:  # the context and concurrency chosen above, unless the args set them
            kind = RuntimeKind(one_request.runtime)
            chosen = [sizing.CONTEXT_FLAGS[kind], str(context)]
            if concurrency:
                chosen += ["--max-num-seqs" if kind == RuntimeKind.VLLM else "--max-running-requests", str(concurrency)]
            asked_args = shlex.join(sizing.with_flags(user_args, chosen))
        assert image is not None and version is not None  # noqa: PT018 — the button is disabled otherwise
        created = studio.deploy(
            name=name.strip(),
            model=model.name,
            model_version=version.version,
            image=image.name,
            image_version=image.version,
            pool=pool.name,
            runtime_args=asked_args,
            resources=resources,
            replicas=replicas,
            autoscale=autoscale,
        )
        flash(f"Deploying {created.name}: {created.model} v{created.model_version} on {created.image}.")
        st.session_state["deployment"] = created.name
        st.switch_page("app_pages/deployments.py")
