"""retention tombstones, blob-key indexes, inspection attempts

`expired_at` on jobs, models and datasets (retention keeps the row so reads answer 410 Gone),
an index on every `storage_key` (the blob owner asks "does any row still refer to this key?" on
each delete: app/blobs), and `inspect_attempts` on models (an inspection that keeps killing its
worker ends `rejected` after MODELPRESS_INSPECT_MAX_ATTEMPTS).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 12:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TOMBSTONED = ("job", "ml_model", "dataset")
KEYED = ("ml_model", "dataset", "artifact")


def upgrade() -> None:
    for table in TOMBSTONED:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("expired_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("ml_model", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("inspect_attempts", sa.Integer(), server_default="0", nullable=False)
        )
    for table in KEYED:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.create_index(
                batch_op.f(f"ix_{table}_storage_key"), ["storage_key"], unique=False
            )


def downgrade() -> None:
    for table in KEYED:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(batch_op.f(f"ix_{table}_storage_key"))
    with op.batch_alter_table("ml_model", schema=None) as batch_op:
        batch_op.drop_column("inspect_attempts")
    for table in TOMBSTONED:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("expired_at")
