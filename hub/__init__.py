"""Cove notebooks: JupyterHub on pooled GPU capacity (spawner, profiles, culling)."""
