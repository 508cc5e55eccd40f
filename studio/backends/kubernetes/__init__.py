"""Cove on Kubernetes: pure manifest builders (``manifests``); the client layer is the only module that talks to a
cluster."""
