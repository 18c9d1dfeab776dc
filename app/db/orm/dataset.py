"""An uploaded `.npz` dataset: one array per model input and optional `labels`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, TimestampMixin, new_id


class Dataset(TimestampMixin, Base):
    __tablename__ = "dataset"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    storage_key: Mapped[str] = mapped_column(String(512), index=True)
    arrays: Mapped[list[Any]] = mapped_column()
    num_samples: Mapped[int] = mapped_column(Integer)
    # Set by retention (MODELPRESS_RETENTION_DAYS): the row stays so that reads answer 410.
    expired_at: Mapped[datetime | None] = mapped_column(default=None)
