"""outbound delivery state

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "routing_state",
        sa.Column("route", sa.String(length=64), nullable=False),
        sa.Column("domain", sa.String(length=255), nullable=False),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.Column("updated", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("route", "domain", name=op.f("pk_routing_state")),
    )
    with op.batch_alter_table("outbound_queue", schema=None) as batch_op:
        batch_op.add_column(sa.Column("queue_id", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("domain", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("status", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("remote_mta", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("last_attempt", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("delay_notified", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.add_column(
            sa.Column("claimed", sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("outbound_queue", schema=None) as batch_op:
        batch_op.drop_column("claimed")
        batch_op.drop_column("delay_notified")
        batch_op.drop_column("last_attempt")
        batch_op.drop_column("remote_mta")
        batch_op.drop_column("status")
        batch_op.drop_column("queue_id")
        batch_op.drop_column("domain")

    op.drop_table("routing_state")
