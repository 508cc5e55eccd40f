"""Cove's control plane: catalog, deployments, controller, backends and the OpenAI-compatible gateway."""

__version__ = "0.1.0"
