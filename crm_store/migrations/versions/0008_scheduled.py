"""reminders, re-engagement and broadcasts: scheduled messages, broadcasts, settings

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 14:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("business") as batch:
        batch.add_column(
            sa.Column(
                "reminder_offsets_min", sa.JSON(), nullable=False, server_default="[1440, 120]"
            )
        )
        batch.add_column(
            sa.Column("quiet_start_min", sa.Integer(), nullable=False, server_default="1260")
        )
        batch.add_column(
            sa.Column("quiet_end_min", sa.Integer(), nullable=False, server_default="540")
        )
    with op.batch_alter_table("services") as batch:
        batch.add_column(sa.Column("reminder_offsets_min", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("return_interval_days", sa.Integer(), nullable=True))
    op.create_table(
        "broadcasts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("title", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("segment", sa.JSON(), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
        sa.Column("scheduled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("created_by_staff_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["created_by_staff_id"], ["staff.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "scheduled_messages",
        sa.Column("id", BigId, nullable=False),
        sa.Column("key", sqlmodel.sql.sqltypes.AutoString(length=120), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("client_id", sa.Integer(), nullable=False),
        sa.Column("appointment_id", sa.Integer(), nullable=True),
        sa.Column("broadcast_id", sa.Integer(), nullable=True),
        sa.Column("service_id", sa.Integer(), nullable=True),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("urgent", sa.Boolean(), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("channel", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=True),
        sa.Column("conversation_id", sa.Integer(), nullable=True),
        sa.Column("message_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("tried", sa.JSON(), nullable=False),
        sa.Column("claimed_by", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["client_id"], ["clients.id"]),
        sa.ForeignKeyConstraint(["appointment_id"], ["appointments.id"]),
        sa.ForeignKeyConstraint(["broadcast_id"], ["broadcasts.id"]),
        sa.ForeignKeyConstraint(["service_id"], ["services.id"]),
        sa.ForeignKeyConstraint(["conversation_id"], ["conversations.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key"),
    )
    op.create_index("ix_scheduled_due", "scheduled_messages", ["status", "due_at"])
    op.create_index("ix_scheduled_broadcast", "scheduled_messages", ["broadcast_id", "status"])
    op.create_index("ix_scheduled_client", "scheduled_messages", ["client_id", "kind", "due_at"])
    op.create_index(
        op.f("ix_scheduled_messages_appointment_id"), "scheduled_messages", ["appointment_id"]
    )
    op.create_index(op.f("ix_scheduled_messages_message_id"), "scheduled_messages", ["message_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_scheduled_messages_message_id"), table_name="scheduled_messages")
    op.drop_index(op.f("ix_scheduled_messages_appointment_id"), table_name="scheduled_messages")
    op.drop_index("ix_scheduled_client", table_name="scheduled_messages")
    op.drop_index("ix_scheduled_broadcast", table_name="scheduled_messages")
    op.drop_index("ix_scheduled_due", table_name="scheduled_messages")
    op.drop_table("scheduled_messages")
    op.drop_table("broadcasts")
    with op.batch_alter_table("services") as batch:
        batch.drop_column("return_interval_days")
        batch.drop_column("reminder_offsets_min")
    with op.batch_alter_table("business") as batch:
        batch.drop_column("quiet_end_min")
        batch.drop_column("quiet_start_min")
        batch.drop_column("reminder_offsets_min")
