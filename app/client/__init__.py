"""The ModelPress client: an httpx API client and the `modelpress` client commands.

It needs httpx and the standard library alone (the bare `pip install modelpress`), so nothing
here imports the server side (app.core, app.db, the domains, FastAPI, SQLAlchemy) or a model
library.
"""

from app.client.api import TERMINAL, ApiError, Client, load_json_arg
from app.client.cli import (
    CLIENT_ERRORS,
    EXIT_BUDGET_MISSED,
    EXIT_ERROR,
    EXIT_FAILED,
    add_client_commands,
)

__all__ = [
    "CLIENT_ERRORS",
    "EXIT_BUDGET_MISSED",
    "EXIT_ERROR",
    "EXIT_FAILED",
    "TERMINAL",
    "ApiError",
    "Client",
    "add_client_commands",
    "load_json_arg",
]
