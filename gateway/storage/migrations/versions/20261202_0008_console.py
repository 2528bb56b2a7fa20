"""The clerks' console: personal accounts, per-user read marks, request assignment.

Revision ID: 20261202_0008
Revises: 20261202_0007
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import gateway.storage.models

revision = "20261202_0008"
down_revision = "20261202_0007"
branch_labels = None
depends_on = None

UTC_TIME = gateway.storage.models.UtcDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "console_user",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("courts", sa.JSON(), nullable=False),
        sa.Column("password_hash", sa.String(length=300), nullable=True),
        sa.Column("totp_secret", sa.String(length=300), nullable=True),
        sa.Column("totp_last_step", sa.BigInteger(), nullable=True),
        sa.Column("enrolment_hash", sa.String(length=64), nullable=True),
        sa.Column("enrolment_expires_at", UTC_TIME, nullable=True),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("enrolled_at", UTC_TIME, nullable=True),
        sa.Column("last_login_at", UTC_TIME, nullable=True),
        sa.Column("disabled_at", UTC_TIME, nullable=True),
        sa.Column("disabled_by", sa.String(length=200), nullable=True),
        sa.Column("session_generation", sa.Integer(), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_console_user")),
        sa.UniqueConstraint("email", name=op.f("uq_console_user_email")),
        sa.UniqueConstraint("enrolment_hash", name=op.f("uq_console_user_enrolment_hash")),
    )
    op.create_table(
        "read_mark",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("read_at", UTC_TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["console_user.id"], name=op.f("fk_read_mark_user_id_console_user"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["request_id"], ["request.id"], name=op.f("fk_read_mark_request_id_request"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", "request_id", name=op.f("pk_read_mark")),
    )  # fmt: skip
    with op.batch_alter_table("read_mark", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_read_mark_request_id"), ["request_id"], unique=False)
    op.create_table(
        "request_assignment",
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("assigned_at", UTC_TIME, nullable=False),
        sa.Column("assigned_by", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"], ["request.id"],
            name=op.f("fk_request_assignment_request_id_request"), ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["console_user.id"],
            name=op.f("fk_request_assignment_user_id_console_user"),
        ),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_request_assignment")),
    )  # fmt: skip
    with op.batch_alter_table("request_assignment", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_request_assignment_user_id"), ["user_id"], unique=False
        )


def downgrade() -> None:
    op.drop_table("request_assignment")
    op.drop_table("read_mark")
    op.drop_table("console_user")
