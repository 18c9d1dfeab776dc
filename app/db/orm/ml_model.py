"""An uploaded network (table `ml_model`, route `/v1/models`)."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, JSONType, TimestampMixin, new_id


class ModelStatus(enum.StrEnum):
    validating = "validating"
    ready = "ready"
    rejected = "rejected"


class MlModel(TimestampMixin, Base):
    __tablename__ = "ml_model"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    format: Mapped[str] = mapped_column(String(32))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    storage_key: Mapped[str] = mapped_column(String(512), index=True)
    status: Mapped[str] = mapped_column(String(16), default=ModelStatus.validating, index=True)
    input_shapes: Mapped[Any | None] = mapped_column(JSONType, default=None)
    inputs: Mapped[list[Any] | None] = mapped_column(default=None)
    outputs: Mapped[list[Any] | None] = mapped_column(default=None)
    parameter_count: Mapped[int | None] = mapped_column(BigInteger, default=None)
    opset: Mapped[int | None] = mapped_column(Integer, default=None)
    error: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    inspect_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Set by retention (MODELPRESS_RETENTION_DAYS): the row stays so that reads answer 410.
    expired_at: Mapped[datetime | None] = mapped_column(default=None)
