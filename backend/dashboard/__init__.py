"""The dashboard at ``/_dashboard`` (data, functions, logs, sessions, jobs), the web app's files, demo data."""

from ._routes import dashboard_routes

__all__ = ["dashboard_routes"]
