"""How pages report what went wrong: a user's mistake or a refusal shows as ``st.error`` with the next step."""

from __future__ import annotations

import html
from collections.abc import Iterator
from contextlib import contextmanager

import streamlit as st
from pydantic import ValidationError

from studio.errors import CoveError, explain


@contextmanager
def guarded(doing: str) -> Iterator[None]:
    """Run a user's action; Cove's errors and invalid input become an ``st.error`` naming what to do next.

    Anything else is a bug and propagates (Streamlit shows the traceback).
    """
    try:
        yield
    except CoveError as exc:
        st.error(
            f"Could not {doing}: {exc.message}" + (f"\n\n**Next:** {exc.hint}" if exc.hint else ""),
            icon=":material/error:",
        )
    except ValidationError as exc:
        st.error(f"Could not {doing}: {explain(exc)}", icon=":material/error:")


def same_tab_link(text: str, url: str) -> str:
    """A link that opens in this tab, as logging in and out should (``st.link_button`` opens a new one)."""
    return (
        f'<a href="{html.escape(url)}" target="_self" style="display:inline-block;padding:.45rem 1rem;'
        'border-radius:.5rem;background:#ff4b4b;color:white;text-decoration:none">'
        f"{html.escape(text)}</a>"
    )


def flash(message: str) -> None:
    """Show ``message`` as a success at the top of the next run (it survives ``st.rerun``/``st.switch_page``)."""
    st.session_state["cove_flash"] = message


def show_flash() -> None:
    message = st.session_state.pop("cove_flash", None)
    if message:
        st.success(message, icon=":material/check_circle:")
