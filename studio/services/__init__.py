"""Studio services: the only code that opens database sessions.

Each module serves one noun with keyword-only functions (``create_deployment(*, db, data)``) that own their
transaction and return ``…Public`` objects, so callers (CLI, UI, controller, gateway) never hold a session.
Violated constraints are translated into Cove errors here.
"""
