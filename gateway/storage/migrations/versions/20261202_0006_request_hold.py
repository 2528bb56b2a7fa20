"""Requests can be held from the retention purge; blobs can be marked as being purged.

`request.held`: `gateway requests hold REF` keeps a request (and its blobs)
whatever its age.  `blob.purged_at`: set in the transaction that deletes the
rows using the blob, so a purge interrupted before the blob is deleted is
finished by the next one (`gateway.retention`).

Revision ID: 20261202_0006
Revises: 20261202_0005
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import gateway.storage.models

revision = "20261202_0006"
down_revision = "20261202_0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("request", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("held", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("blob", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "purged_at", gateway.storage.models.UtcDateTime(timezone=True), nullable=True
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("blob", schema=None) as batch_op:
        batch_op.drop_column("purged_at")
    with op.batch_alter_table("request", schema=None) as batch_op:
        batch_op.drop_column("held")
