"""Requests keep the greffe's notes on single documents when it rejects them (`status_notes`).

Revision ID: 20261202_0007
Revises: 20261202_0006
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "20261202_0007"
# After the teletransmission (0005) and request hold (0006) revisions.
down_revision = "20261202_0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("request", schema=None) as batch_op:
        batch_op.add_column(sa.Column("status_notes", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("request", schema=None) as batch_op:
        batch_op.drop_column("status_notes")
