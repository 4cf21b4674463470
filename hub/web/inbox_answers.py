"""What the inbox API answers (hub/web/inbox_api.py): the staff list, conversations, a
client's timeline (messages and notes), canned replies, as models, and how they are built from
the store's rows."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import quote

from pydantic import BaseModel, Field, RootModel

from crm_store.inbox import ConversationRow
from crm_store.models import CannedReply, Message, StaffNote
from crm_store.timeutil import iso
from hub.pipeline.events import message_frame
from hub.web.answers import MessageFrame, Time


class StaffMember(BaseModel):
    id: int
    name: str
    role: str


class StaffMemberWithEmail(StaffMember):
    """As owners and admins see a colleague."""

    email: str


class StaffList(RootModel[list[StaffMemberWithEmail | StaffMember]]):
    pass


class ConversationClient(BaseModel):
    id: int
    name: str | None
    phone: str | None
    email: str | None
    tags: list[str]


class ConversationView(BaseModel):
    """A conversation as the list shows it. `waiting_since`: when `waiting`, the first client
    message after the last staff reply (else when it was opened); null otherwise."""

    id: int
    channel: str
    inbox: str
    status: str
    assignee_id: int | None
    client: ConversationClient
    opened_at: Time
    last_message_at: Time | None
    first_response_at: Time | None
    waiting_since: Time | None
    unread: bool
    last_message: MessageFrame | None


class ConversationList(BaseModel):
    conversations: list[ConversationView]


class StaffRef(BaseModel):
    id: int
    name: str | None


class AttachmentLink(BaseModel):
    """`download` is the hub's /api/attachments/... when the provider holds the file, else the
    file's own URL."""

    kind: str | None
    name: str | None
    mime_type: str | None
    url: str | None
    download: str | None


class TimelineMessage(BaseModel):
    """A message frame with where it was written and who wrote it."""

    id: str
    direction: Literal["in", "out"]
    author: str
    text: str
    attachments: list[AttachmentLink]
    status: str
    at: Time
    kind: Literal["message"]
    conversation_id: int
    channel: str
    inbox: str
    staff: StaffRef | None
    error: str | None


class TimelineNote(BaseModel):
    """A private note: never sent to the client."""

    kind: Literal["note"]
    id: int
    conversation_id: int | None
    text: str
    staff: StaffRef | None
    at: Time


class TimelinePage(BaseModel):
    """Oldest first; `more`: there are earlier items (ask with `before`)."""

    items: list[Annotated[TimelineMessage | TimelineNote, Field(discriminator="kind")]]
    more: bool


class CannedView(BaseModel):
    id: int
    title: str
    text: str
    language: str | None


class CannedList(RootModel[list[CannedView]]):
    pass


# Building them -----------------------------------------------------------------------------


def conversation_view(row: ConversationRow) -> ConversationView:
    conv, client = row.conversation, row.client
    return ConversationView(
        id=conv.id,  # type: ignore[arg-type]
        channel=conv.channel,
        inbox=conv.inbox,
        status=conv.status,
        assignee_id=conv.assignee_id,
        client=ConversationClient(
            id=client.id,  # type: ignore[arg-type]
            name=client.name,
            phone=client.phone,
            email=client.email,
            tags=client.tags,
        ),
        opened_at=iso(conv.opened_at),  # type: ignore[arg-type]
        last_message_at=iso(conv.last_message_at),
        first_response_at=iso(conv.first_response_at),
        waiting_since=iso(row.waiting_since),
        unread=row.unread,
        last_message=MessageFrame(**message_frame(row.last_message)) if row.last_message else None,
    )


def timeline_message(message: Message, names: dict[int, str]) -> TimelineMessage:
    frame = message_frame(message)
    frame.update(
        kind="message",
        conversation_id=message.conversation_id,
        channel=message.channel,
        inbox=message.inbox,
        staff=StaffRef(id=message.staff_id, name=names.get(message.staff_id))
        if message.staff_id
        else None,
        error=message.error,
        attachments=[attachment_link(message, a) for a in message.attachments or []],
    )
    return TimelineMessage(**frame)


def attachment_link(message: Message, attachment: dict[str, Any]) -> AttachmentLink:
    """`download` goes through the hub when the provider holds the file (a ref), else the
    file's own URL."""
    ref = attachment.get("ref")
    download = (
        f"/api/attachments/{quote(message.channel, safe='')}/{quote(message.inbox, safe='')}/"
        f"{quote(str(ref), safe='')}"
        if ref
        else attachment.get("url")
    )
    return AttachmentLink(
        kind=attachment.get("kind"),
        name=attachment.get("name"),
        mime_type=attachment.get("mime_type"),
        url=attachment.get("url"),
        download=download,
    )


def timeline_note(note: StaffNote, names: dict[int, str]) -> TimelineNote:
    return TimelineNote(
        kind="note",
        id=note.id,  # type: ignore[arg-type]
        conversation_id=note.conversation_id,
        text=note.text,
        staff=StaffRef(id=note.staff_id, name=names.get(note.staff_id)) if note.staff_id else None,
        at=iso(note.created_at),  # type: ignore[arg-type]
    )


def canned_view(canned: CannedReply) -> CannedView:
    return CannedView(
        id=canned.id,  # type: ignore[arg-type]
        title=canned.title,
        text=canned.text,
        language=canned.language,
    )
