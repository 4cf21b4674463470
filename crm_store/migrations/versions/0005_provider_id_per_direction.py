"""a provider message id is unique per direction

An outbound message's provider id could equal an inbound one's (a provider numbering each
side on its own); with one key across both, storing the send's status failed after the
message had gone out, and the redelivered entry sent it again.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 20:40:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_constraint("uq_message_provider", type_="unique")
        batch_op.create_unique_constraint(
            "uq_message_provider", ["channel", "inbox", "direction", "provider_message_id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_constraint("uq_message_provider", type_="unique")
        batch_op.create_unique_constraint(
            "uq_message_provider", ["channel", "inbox", "provider_message_id"]
        )
