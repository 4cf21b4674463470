"""unreachable identities, SMS segments, the client's source reference

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 20:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("channel_identities", schema=None) as batch_op:
        batch_op.add_column(sa.Column("unreachable_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column(
                "unreachable_reason", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True
            )
        )
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("segments", sa.Integer(), nullable=True))
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("source_ref", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.drop_column("source_ref")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("segments")
    with op.batch_alter_table("channel_identities", schema=None) as batch_op:
        batch_op.drop_column("unreachable_reason")
        batch_op.drop_column("unreachable_at")
