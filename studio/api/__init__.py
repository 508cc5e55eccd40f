"""The Cove API: ``/api/v1``, every noun the services have, for notebooks, pipelines and the remote CLI.

``app`` builds the FastAPI application (errors, body limit, OpenAPI); ``auth`` says who calls (a personal access
token, a hub token, or the local CLI in process); ``paging`` is the one list shape; each other module is one noun's
routes, thin over its service: every call goes through the services with the caller's principal.
"""
