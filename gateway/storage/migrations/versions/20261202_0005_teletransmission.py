"""Teletransmission: homologated software, and what a credential's life records.

Revision ID: 20261202_0005
Revises: 20261201_0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import gateway.storage.models

revision = "20261202_0005"
down_revision = "20261201_0003"
branch_labels = None
depends_on = None

UTC_TIME = gateway.storage.models.UtcDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "software",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("publisher", sa.String(length=200), nullable=False, server_default=""),
        sa.Column("homologated_at", UTC_TIME, nullable=False),
        sa.Column("homologated_by", sa.String(length=200), nullable=False),
        sa.Column("revoked_at", UTC_TIME, nullable=True),
        sa.Column("revoked_by", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_software")),
        sa.UniqueConstraint("name", name=op.f("uq_software_name")),
    )
    with op.batch_alter_table("credential", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("issued_by", sa.String(length=200), nullable=False, server_default="")
        )
        batch_op.add_column(sa.Column("revoked_by", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("last_used_at", UTC_TIME, nullable=True))
        batch_op.add_column(sa.Column("expiry_notice_sent_at", UTC_TIME, nullable=True))
        batch_op.create_index("ix_credential_expires_at", ["expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("credential", schema=None) as batch_op:
        batch_op.drop_index("ix_credential_expires_at")
        batch_op.drop_column("expiry_notice_sent_at")
        batch_op.drop_column("last_used_at")
        batch_op.drop_column("revoked_by")
        batch_op.drop_column("issued_by")
    op.drop_table("software")
