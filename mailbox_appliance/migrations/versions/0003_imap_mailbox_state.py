"""imap mailbox state

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mailbox_expunges",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "mailbox_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("uid", sa.BigInteger(), nullable=False),
        sa.Column("modseq", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["mailbox_id"], ["mailboxes.id"], name=op.f("fk_mailbox_expunges_mailbox_id_mailboxes")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mailbox_expunges")),
    )
    with op.batch_alter_table("mailbox_expunges", schema=None) as batch_op:
        batch_op.create_index(
            "ix_mailbox_expunges_mailbox_id_modseq", ["mailbox_id", "modseq"], unique=False
        )

    with op.batch_alter_table("mailbox_entries", schema=None) as batch_op:
        batch_op.create_index(
            "ix_mailbox_entries_mailbox_id_modseq", ["mailbox_id", "modseq"], unique=False
        )

    with op.batch_alter_table("mailboxes", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("first_recent", sa.BigInteger(), server_default="1", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("mailboxes", schema=None) as batch_op:
        batch_op.drop_column("first_recent")

    with op.batch_alter_table("mailbox_entries", schema=None) as batch_op:
        batch_op.drop_index("ix_mailbox_entries_mailbox_id_modseq")

    with op.batch_alter_table("mailbox_expunges", schema=None) as batch_op:
        batch_op.drop_index("ix_mailbox_expunges_mailbox_id_modseq")

    op.drop_table("mailbox_expunges")
