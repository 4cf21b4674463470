"""Events on hub:events: the shape every consumer (bots, live inbox, web chat) reads."""

from __future__ import annotations

from typing import Any

from crm_store.models import Conversation, Message
from crm_store.timeutil import iso


def message_frame(message: Message) -> dict[str, Any]:
    """A message as the web chat and the staff API show it."""
    return {
        "id": message.public_id,
        "direction": message.direction,
        "author": message.author,
        "text": message.text,
        "attachments": message.attachments,
        "status": message.status,
        "at": iso(message.created_at),
    }


def message_event(message: Message, conversation: Conversation) -> dict[str, Any]:
    return {
        "kind": "message",
        "conversation_id": conversation.id,
        "conversation_status": conversation.status,
        "client_id": conversation.client_id,
        "channel": conversation.channel,
        "inbox": conversation.inbox,
        "chat_id": conversation.chat_id,
        "message": message_frame(message),
    }
