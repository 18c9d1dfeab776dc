"""Every ORM class; import this module to register them all on Base.metadata."""

from app.db.orm.artifact import Artifact
from app.db.orm.dataset import Dataset
from app.db.orm.job import Job, JobStatus
from app.db.orm.job_event import JobEvent
from app.db.orm.metric import MetricSample
from app.db.orm.ml_model import MlModel, ModelStatus
from app.db.orm.tenant import ApiKey, Tenant
from app.db.orm.webhook import DeliveryStatus, WebhookDelivery

__all__ = [
    "ApiKey",
    "Artifact",
    "Dataset",
    "DeliveryStatus",
    "Job",
    "JobEvent",
    "JobStatus",
    "MetricSample",
    "MlModel",
    "ModelStatus",
    "Tenant",
    "WebhookDelivery",
]
