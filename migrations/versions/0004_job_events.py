"""job events

`job_event`: the live stream of a job (`GET /v1/jobs/{id}/events` and `/logs`): status, step,
progress, log and verdict events, numbered per job by `seq`. `job.event_seq` is the counter the
writers bump in the UPDATE that hands out each number (gap-free under concurrent writers; the
UPDATE locks the job row on Postgres). Events go with their job (ON DELETE CASCADE).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 15:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("event_seq", sa.Integer(), server_default="0", nullable=False)
        )
    op.create_table(
        "job_event",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("event", sa.String(length=16), nullable=False),
        sa.Column(
            "data",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["job.id"], name=op.f("fk_job_event_job_id_job"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant.id"],
            name=op.f("fk_job_event_tenant_id_tenant"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_event")),
        sa.UniqueConstraint("job_id", "seq", name="uq_job_event_job_id_seq"),
    )


def downgrade() -> None:
    op.drop_table("job_event")
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_column("event_seq")
