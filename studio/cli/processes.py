"""`cove up`, `cove server`, `cove demo-model`: running Cove."""

from __future__ import annotations

import os
from pathlib import Path

import click

from studio.cli.base import cli, settings_of

# ------------------------------------------------------------------------------------------------ processes


@cli.command()
@click.option(
    "--demo/--no-demo", default=None, help="Build and deploy the demo model on first start (default: COVE_DEMO, true)."
)
@click.option(
    "--verbose", is_flag=True, help="Show every part's own output here too (always in COVE_HOME/logs: `cove logs`)."
)
@click.pass_context
def up(ctx: click.Context, demo: bool | None, verbose: bool) -> None:
    """Run everything in the foreground; Ctrl-C stops it all."""
    from studio.up import up as run_up

    settings = settings_of(ctx)
    ctx.exit(run_up(settings, demo=settings.demo if demo is None else demo, verbose=verbose))


@cli.command()
@click.pass_context
def server(ctx: click.Context) -> None:
    """Run the gateway and the controller (what `cove up` starts)."""
    from studio.server import serve

    serve(settings_of(ctx))


@cli.command()
@click.pass_context
def ui(ctx: click.Context) -> None:
    """Run the studio UI (Streamlit) on COVE_UI_PORT (what `cove up` starts)."""
    from studio.server import bind, refuse_exposed
    from studio.ui.launch import streamlit_argv

    settings = settings_of(ctx)
    refuse_exposed(settings)
    bind(
        settings.host, settings.ui_port, "COVE_UI_PORT"
    ).close()  # a clear error, not Streamlit's, when the port is taken
    argv = streamlit_argv(settings)
    os.execv(argv[0], argv)


@cli.command()
@click.pass_context
def playground(ctx: click.Context) -> None:
    """Run the playground (Gradio) on COVE_PLAYGROUND_PORT (what `cove up` starts)."""
    import sys

    from studio.server import bind, refuse_exposed

    settings = settings_of(ctx)
    refuse_exposed(settings)
    bind(settings.host, settings.playground_port, "COVE_PLAYGROUND_PORT").close()
    click.echo(f"playground on {settings.playground_url}, chatting through {settings.gateway_url}/v1", err=True)
    os.execv(sys.executable, [sys.executable, "-m", "playground"])  # a program of its own, as the hub is


@cli.command("hub")
@click.pass_context
def hub_command(ctx: click.Context) -> None:
    """Run the notebook hub (JupyterHub and its proxy) on COVE_HUB_PORT (what `cove up` starts)."""
    import importlib.util
    import signal
    import sys

    from studio.server import bind, refuse_exposed

    settings = settings_of(ctx)
    refuse_exposed(settings)
    bind(settings.host, settings.hub_port, "COVE_HUB_PORT").close()
    settings.hub_dir.mkdir(parents=True, exist_ok=True)
    os.chdir(settings.hub_dir)
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # an inherited "ignore" would make the hub's services ignore it too
    found = importlib.util.find_spec("hub")  # the hub is a program Cove runs, not a module it uses
    assert found is not None and found.origin is not None  # noqa: PT018  (installed with Cove)
    config = Path(found.origin).with_name("jupyterhub_config.py")
    click.echo(f"notebook hub on {settings.hub_url}", err=True)
    os.execv(sys.executable, [sys.executable, "-m", "jupyterhub", "-f", str(config)])


@cli.command("demo-model")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--steps", default=200, show_default=True, help="Training steps.")
def demo_model(path: Path, steps: int) -> None:
    """Build the tiny offline demo chat model into PATH."""
    from studio.demo import build_demo_model

    build_demo_model(path, steps=steps, progress=click.echo)
