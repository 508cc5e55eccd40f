"""``python -m playground``: the playground on COVE_PLAYGROUND_PORT, chatting through the gateway (what
``cove playground`` runs)."""

from playground.app import serve
from studio.settings import Settings

serve(Settings())
