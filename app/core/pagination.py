"""Cursor pages: `{"items": [...], "next_cursor": "..." | null}`, newest first."""

from __future__ import annotations

import base64
import binascii
import re
from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, Field
from sqlalchemy import Select, and_, or_

from app.core.errors import BadRequest

T = TypeVar("T")
MAX_LIMIT = 200
MAX_CURSOR_LENGTH = 512  # a cursor is a timestamp and an id, base64: far shorter
_CURSOR_ID = re.compile(r"[0-9A-Za-z-]{1,64}")


class Page(BaseModel, Generic[T]):
    """One page of a list, newest first."""

    items: list[T] = Field(description="At most `limit` items.")
    next_cursor: str | None = Field(
        None, description="Pass as `cursor` for the next page; null on the last page."
    )


def encode_cursor(created_at: datetime, id_: str) -> str:
    raw = f"{created_at.isoformat()}|{id_}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The (created_at, id) a cursor stands for.

    Raises:
        BadRequest: `invalid_cursor` (400), for anything `encode_cursor` did not write.
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, id_ = raw.split("|", 1)
        if not _CURSOR_ID.fullmatch(id_):  # ids are UUIDs; never send the database a NUL
            raise ValueError("not an id")
        return datetime.fromisoformat(stamp), id_
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise BadRequest("Invalid cursor.", code="invalid_cursor") from exc


def paginate(stmt: Select[Any], entity: Any, limit: int, cursor: str | None) -> Select[Any]:
    """Apply keyset pagination on (created_at, id) descending; fetches one extra row."""
    if cursor:
        stamp, id_ = decode_cursor(cursor)
        stmt = stmt.where(
            or_(entity.created_at < stamp, and_(entity.created_at == stamp, entity.id < id_))
        )
    return stmt.order_by(entity.created_at.desc(), entity.id.desc()).limit(limit + 1)


def page_of(rows: list[Any], limit: int) -> tuple[list[Any], str | None]:
    """Split the extra row off into a next cursor."""
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], encode_cursor(last.created_at, last.id)
