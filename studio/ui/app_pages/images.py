"""Images: the built-in runtimes and their versions, and registering a custom image (a reference or a Dockerfile)."""

import shlex

import streamlit as st

from studio.errors import InvalidSpec
from studio.models import ImageCreate
from studio.ui import tables
from studio.ui.facade import current
from studio.ui.feedback import flash, guarded
from studio.values import Resources, RuntimeKind

studio = current()
st.title("Images")
st.caption("A model server runs an image: its runtime, a container reference for Kubernetes, and how to run it here.")

found = studio.images()
problems = {f"{i.name}:{i.version}": studio.local_problem(i, Resources()) for i in found}
st.dataframe(tables.image_rows(found, problems), hide_index=True, width="stretch")
for ref, problem in problems.items():
    if problem:
        st.caption(f"**{ref}** does not run on this machine: {problem}")
for image in found:
    if image.build_status == "Failed":
        st.error(f"**{image.name}:{image.version}** could not be built: {image.build_message}")
        if st.button(f"Rebuild {image.name}:{image.version}", key=f"rebuild-{image.name}-{image.version}"):
            with guarded("rebuild the image"):
                studio.rebuild_image(image.name, image.version)
                flash(f"Rebuilding {image.reference}.")
                st.rerun()
    elif image.build_status in ("Pending", "Building"):
        st.info(f"**{image.name}:{image.version}**: {image.build_message}")

st.subheader("Register a custom image")
with st.form("add-image"):
    left, right = st.columns(2)
    name = left.text_input("Name", placeholder="my-server", key="image-name")
    version = right.text_input(
        "Version (tag)", key="image-version", placeholder="1.0.0", help="A pinned tag; `latest` is refused."
    )
    ref = st.text_input(
        "Container reference (without tag)",
        key="image-ref",
        placeholder="registry.example.com/team/my-server",
        help="Where the image is pulled from; with a Dockerfile, where it is pushed (empty: the registry Cove is "
        "configured with, COVE_REGISTRY).",
    )
    runtime = st.selectbox("Runtime", [k.value for k in RuntimeKind], index=list(RuntimeKind).index(RuntimeKind.CUSTOM))
    command = st.text_input(
        "Local command (optional)",
        key="image-command",
        placeholder="python serve.py --model {model} --port {port}",
        help="Makes the image runnable on this machine. Placeholders: {model} {model_id} {host} {port} {name}.",
    )
    health = st.text_input("Health path", value="/health")
    dockerfile = st.text_area(
        "Dockerfile (optional)",
        key="image-dockerfile",
        placeholder="FROM python:3.11-slim\n…",
        help="Built in the cluster (a Kaniko Job) and pushed to the reference; deployments on Kubernetes wait for "
        "it. The Dockerfile is the whole build context: fetch files with RUN or ADD of a URL.",
    )
    description = st.text_input("Description (optional)")
    submitted = st.form_submit_button("Register image", type="primary")
if submitted:
    with guarded("register the image"):
        try:
            argv = shlex.split(command) if command.strip() else None
        except ValueError as exc:
            raise InvalidSpec(f"local command: {exc}", hint="close the quote") from exc
        image = studio.add_image(
            ImageCreate(
                name=name.strip(),
                version=version.strip(),
                runtime=RuntimeKind(runtime),
                ref=ref.strip() or None,
                local_command=argv,
                health_path=health.strip(),
                dockerfile=dockerfile if dockerfile.strip() else None,
                description=description,
            )
        )
        flash(f"Registered {image.reference}.")
        st.rerun()
