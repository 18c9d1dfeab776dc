"""durable job metrics

`metric_sample`: the job counters and histograms behind `/metrics` (`modelpress_jobs_total`,
`modelpress_job_duration_seconds`, `modelpress_step_duration_seconds`,
`modelpress_job_queue_wait_seconds`), one row per sample, bumped in the transaction of the job
transition it counts. Not derived from `job` rows: deleting or expiring jobs never lowers them.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 15:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "metric_sample",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("labels", sa.String(length=512), nullable=False),
        sa.Column("value", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", "labels", name=op.f("pk_metric_sample")),
    )


def downgrade() -> None:
    op.drop_table("metric_sample")
