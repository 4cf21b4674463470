"""analytics: messages by time, and by conversation in time order

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 18:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The analytics page reads a period's messages, then walks each conversation in time order.
    op.create_index("ix_message_created", "messages", ["created_at"])
    op.create_index("ix_message_conversation_time", "messages", ["conversation_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_message_conversation_time", table_name="messages")
    op.drop_index("ix_message_created", table_name="messages")
