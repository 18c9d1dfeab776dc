"""The ModelPress client: a typed httpx API client and the `modelpress` client commands.

It needs httpx, pydantic and rich (the bare `pip install modelpress`), so nothing here imports
the server side (app.core, app.db, the domains, FastAPI, SQLAlchemy) or a model library.

    from app.client import Client

    with Client("http://127.0.0.1:8000", api_key) as client:
        result = client.optimize("model.onnx", recipe="auto",
                                 constraints={"max_accuracy_drop": 0.01}, out="dist")
        print(result.job.status, result.verdict, result.exit_code)
"""

from app.client.api import Client, load_json_arg
from app.client.cli import CLIENT_ERRORS, add_client_commands
from app.client.errors import ApiError, UnsupportedByServer
from app.client.events import Follower, parse_sse
from app.client.models import (
    EXIT_BUDGET_MISSED,
    EXIT_ERROR,
    EXIT_FAILED,
    EXIT_MET,
    TERMINAL,
    Accuracy,
    Artifact,
    Dataset,
    Job,
    JobEvent,
    Model,
    OptimizeResult,
    Page,
    Progress,
    Report,
    Verdict,
)
from app.client.retry import RetryPolicy

__all__ = [
    "CLIENT_ERRORS",
    "EXIT_BUDGET_MISSED",
    "EXIT_ERROR",
    "EXIT_FAILED",
    "EXIT_MET",
    "TERMINAL",
    "Accuracy",
    "ApiError",
    "Artifact",
    "Client",
    "Dataset",
    "Follower",
    "Job",
    "JobEvent",
    "Model",
    "OptimizeResult",
    "Page",
    "Progress",
    "Report",
    "RetryPolicy",
    "UnsupportedByServer",
    "Verdict",
    "add_client_commands",
    "load_json_arg",
    "parse_sse",
]
