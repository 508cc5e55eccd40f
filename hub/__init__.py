"""Cove notebooks: JupyterHub on pooled GPU capacity (its configuration and the pool-aware spawners). A program that
imports Cove (``studio``); Cove never imports it."""
