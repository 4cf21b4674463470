"""a conversation knows whether its chat is private

A client may write in a Telegram group the bot is in (TELEGRAM_GROUPS=staff) or an Instagram
group thread. Reminders and re-engagement pick a client's chats from their conversations, and
must never pick a group (crm_store/reach.py).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Every conversation so far is taken as private: groups were not told apart before, and
    # from 0010's code on a Telegram group was never stored (TELEGRAM_GROUPS=ignore).
    # In place, both ways (SQLite has ADD and DROP COLUMN): copying the table, batch mode's
    # way, would trip the foreign key of every message pointing at a conversation.
    with op.batch_alter_table("conversations", schema=None, recreate="never") as batch_op:
        batch_op.add_column(
            sa.Column("private", sa.Boolean(), nullable=False, server_default=sa.true())
        )


def downgrade() -> None:
    with op.batch_alter_table("conversations", schema=None, recreate="never") as batch_op:
        batch_op.drop_column("private")
