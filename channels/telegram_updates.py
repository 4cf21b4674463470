"""Telegram updates as pydantic models, and what each one means for the hub.

Only the fields the hub uses are modelled (`extra="ignore"`): Telegram adds fields to its
objects with every Bot API release, and an update we do not understand is answered 200 and
dropped, never retried. `interpret` is pure: an update in, an `Event` out (a message to
publish, a user who blocked the bot, or the reason it was ignored).

Groups, supergroups and channels are not where a salon talks to one client: two people in one
group would share one conversation, and whatever the bot said (appointments, a phone) everyone
would read. So by default (`TELEGRAM_GROUPS=ignore`) an update from any chat that is not
private is acknowledged and dropped, its text never published nor logged. With `staff` a
group's messages are kept as `private=False` messages: stored and handed to staff, the bot
never answering them (hub/pipeline/bot_worker.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from channels.layout import split_text as split_parts
from hub.messages import Attachment, ContactHints, InboundMessage

# The update types the channel asks for (setWebhook / getUpdates `allowed_updates`).
# Edited messages are not asked for: an edit would make the bot answer the same question twice.
ALLOWED_UPDATES = ["message", "callback_query", "my_chat_member"]

LANGUAGES = {"uk", "en", "ru"}
START_RE = re.compile(r"^/start(?:@\w+)?(?:\s+(?P<payload>.*))?$", re.DOTALL)
PAYLOAD_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_TEXT = 20_000
CALLBACK_DATA_BYTES = 64  # Telegram's limit on callback_data
FileKind = Literal["image", "video", "audio", "voice", "file"]
# What becomes of updates from groups, supergroups and channels (TELEGRAM_GROUPS).
GroupPolicy = Literal["ignore", "staff"]
PRIVATE = "private"  # Telegram's chat.type of a one-to-one chat with the bot


# Telegram's ids fit in 64 bits (52 significant): a longer one is no update of Telegram's, and
# would make chat and message references longer than the hub keeps.
TgId = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
# A negative size is no size: dropped rather than refusing the message it came with.
Size = Annotated[int | None, AfterValidator(lambda v: v if v is None or v >= 0 else None)]


class TgModel(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)


class TgUser(TgModel):
    id: TgId
    is_bot: bool = False
    first_name: str = ""
    last_name: str | None = None
    username: str | None = None
    language_code: str | None = None


class TgChat(TgModel):
    id: TgId
    # Always sent by Telegram; a chat without one is refused rather than taken as private.
    type: str

    @property
    def private(self) -> bool:
        return self.type == PRIVATE


class TgPhotoSize(TgModel):
    file_id: str
    width: int = 0
    height: int = 0
    file_size: Size = None


class TgFile(TgModel):
    """Document, voice, video, video note, audio, animation: a file with optional details."""

    file_id: str
    file_size: Size = None
    mime_type: str | None = None
    file_name: str | None = None


class TgSticker(TgModel):
    file_id: str
    file_size: Size = None
    emoji: str | None = None
    is_animated: bool = False
    is_video: bool = False


class TgLocation(TgModel):
    latitude: float
    longitude: float


class TgVenue(TgModel):
    location: TgLocation
    title: str = ""
    address: str = ""


class TgContact(TgModel):
    phone_number: str
    first_name: str = ""
    last_name: str | None = None
    user_id: TgId | None = None


class TgButton(TgModel):
    text: str
    callback_data: str | None = None


class TgInlineKeyboard(TgModel):
    inline_keyboard: list[list[TgButton]] = Field(default_factory=list)


class TgMessageRef(TgModel):
    message_id: TgId


class TgMessage(TgModel):
    message_id: TgId
    date: int = 0  # unix time; 0 for an inaccessible message (in a callback query)
    chat: TgChat
    from_user: TgUser | None = Field(default=None, alias="from")
    text: str | None = None
    caption: str | None = None
    photo: list[TgPhotoSize] | None = None
    document: TgFile | None = None
    animation: TgFile | None = None
    voice: TgFile | None = None
    video: TgFile | None = None
    video_note: TgFile | None = None
    audio: TgFile | None = None
    sticker: TgSticker | None = None
    location: TgLocation | None = None
    venue: TgVenue | None = None
    contact: TgContact | None = None
    reply_to_message: TgMessageRef | None = None
    reply_markup: TgInlineKeyboard | None = None


class TgCallbackQuery(TgModel):
    id: str
    from_user: TgUser = Field(alias="from")
    message: TgMessage | None = None
    data: str | None = None


class TgChatMember(TgModel):
    status: str


class TgChatMemberUpdated(TgModel):
    chat: TgChat
    from_user: TgUser = Field(alias="from")
    date: int = 0
    new_chat_member: TgChatMember


class TgUpdate(TgModel):
    update_id: TgId
    message: TgMessage | None = None
    callback_query: TgCallbackQuery | None = None
    my_chat_member: TgChatMemberUpdated | None = None


@dataclass(frozen=True)
class Event:
    """What an update means: a message to publish (and, for a button press, the callback to
    answer), a user who blocked the bot, or why nothing happens."""

    message: InboundMessage | None = None
    answer_callback: str | None = None  # answer this callback query after publishing
    blocked_by: int | None = None  # this user blocked the bot
    ignored: str | None = None  # why nothing happens (never the text of a message)
    notice: bool = False  # worth an info line, not only a debug one


def interpret(
    update: TgUpdate,
    inbox: str,
    raw: dict[str, Any] | None = None,
    *,
    groups: GroupPolicy = "ignore",
) -> Event:
    if update.message is not None:
        chat = update.message.chat
        if not chat.private and groups == "ignore":
            return Event(ignored=_group_ignored("a message", chat))
        msg = from_message(update.message, inbox, raw)
        return Event(message=msg) if msg is not None else Event(ignored="nothing we keep")
    if update.callback_query is not None:
        return from_callback(update.callback_query, inbox, raw, groups=groups)
    if update.my_chat_member is not None:
        return from_member_update(update.my_chat_member)
    # Edited messages and channel posts among them: never asked for, and not kept if sent.
    return Event(ignored="an update type the channel does not handle")


def _group_ignored(what: str, chat: TgChat) -> str:
    return f"{what} in {chat.type} chat {chat.id} (TELEGRAM_GROUPS=ignore)"


# Messages ---------------------------------------------------------------------------------


def from_message(
    message: TgMessage, inbox: str, raw: dict[str, Any] | None = None
) -> InboundMessage | None:
    sender = message.from_user
    if sender is None or sender.is_bot:
        return None  # channel posts and other bots' messages are not client messages
    chat = str(message.chat.id)
    hints = sender_hints(sender)
    text = (message.text or message.caption or "")[:MAX_TEXT]
    start = START_RE.match(text) if message.text else None
    if start:
        text = "/start"
        payload = (start.group("payload") or "").strip()
        if PAYLOAD_RE.match(payload):
            hints = hints.model_copy(update={"source": payload})
    attachments = attachments_of(message)
    if message.contact is not None:
        card = message.contact
        attachments.append(contact_attachment(card))
        # Only a contact the sender shared of themselves says whose phone it is; a forwarded
        # card is someone else's number and must not link this chat to their client card.
        if card.user_id is not None and card.user_id == sender.id:
            hints = hints.model_copy(update={"phone": e164(card.phone_number)})
    if not text and not attachments:
        return None  # service messages (members joined, pinned, …)
    return InboundMessage(
        channel="telegram",
        inbox=inbox,
        chat_id=chat,
        sender_id=str(sender.id),
        # Message ids are unique only within a chat.
        provider_message_id=f"{chat}:{message.message_id}",
        sent_at=_when(message.date),
        text=text,
        attachments=attachments,
        contact=hints,
        reply_to_id=(
            f"{chat}:{message.reply_to_message.message_id}" if message.reply_to_message else None
        ),
        private=message.chat.private,
        raw=raw,
    )


def attachments_of(message: TgMessage) -> list[Attachment]:
    found: list[Attachment] = []
    if message.photo:
        # Telegram sends every size it made; the staff want the largest.
        best = max(message.photo, key=lambda p: (p.width * p.height, p.file_size or 0))
        found.append(
            Attachment(kind="image", ref=best.file_id, mime_type="image/jpeg", size=best.file_size)
        )
    if message.animation is not None:
        # An animation also arrives as `document` (for old clients): keep one of the two.
        found.append(_file("video", message.animation, "video/mp4"))
    elif message.document is not None:
        found.append(_file("file", message.document, None))
    if message.voice is not None:
        found.append(_file("voice", message.voice, "audio/ogg"))
    if message.video is not None:
        found.append(_file("video", message.video, "video/mp4"))
    if message.video_note is not None:
        found.append(_file("video", message.video_note, "video/mp4"))
    if message.audio is not None:
        found.append(_file("audio", message.audio, "audio/mpeg"))
    if message.sticker is not None:
        found.append(sticker_attachment(message.sticker))
    place = message.venue.location if message.venue else message.location
    if place is not None:
        found.append(location_attachment(place, message.venue.title if message.venue else None))
    return found


def _file(kind: FileKind, file: TgFile, default_mime: str | None) -> Attachment:
    return Attachment(
        kind=kind,
        ref=file.file_id,
        mime_type=file.mime_type or default_mime,
        name=file.file_name,
        size=file.file_size,
    )


def sticker_attachment(sticker: TgSticker) -> Attachment:
    if sticker.is_animated:
        mime = "application/x-tgsticker"
    elif sticker.is_video:
        mime = "video/webm"
    else:
        mime = "image/webp"
    return Attachment(
        kind="sticker",
        ref=sticker.file_id,
        mime_type=mime,
        name=sticker.emoji,
        size=sticker.file_size,
    )


def location_attachment(place: TgLocation, title: str | None = None) -> Attachment:
    coords = f"{place.latitude:.6f},{place.longitude:.6f}"
    return Attachment(
        kind="location",
        ref=coords,
        url=f"https://www.openstreetmap.org/?mlat={place.latitude:.6f}"
        f"&mlon={place.longitude:.6f}#map=17/{place.latitude:.6f}/{place.longitude:.6f}",
        name=title or None,
    )


def contact_attachment(card: TgContact) -> Attachment:
    name = " ".join(p for p in (card.first_name, card.last_name) if p).strip()
    return Attachment(kind="contact", ref=e164(card.phone_number), name=name[:200] or None)


def sender_hints(user: TgUser) -> ContactHints:
    name = " ".join(p for p in (user.first_name, user.last_name) if p).strip()
    return ContactHints(
        display_name=name[:200] or None,
        username=user.username[:200] if user.username else None,
        language=language_of(user.language_code),
    )


def language_of(code: str | None) -> str | None:
    """The hub's language for Telegram's IETF tag ("uk", "en-GB"), if it speaks it."""
    if not code:
        return None
    base = code.strip().lower().replace("_", "-").split("-")[0]
    return base if base in LANGUAGES else None


def e164(raw: str) -> str | None:
    """Telegram's contact numbers are international, often without the "+" ("380671234567")."""
    digits = re.sub(r"\D", "", raw)
    return f"+{digits}" if 7 <= len(digits) <= 15 else None


def _when(date: int) -> datetime:
    if date > 0:
        try:
            return datetime.fromtimestamp(date, UTC)
        except (OverflowError, OSError, ValueError):
            pass  # no time a clock can show: the message is kept, received now
    return datetime.now(UTC)


# Buttons ----------------------------------------------------------------------------------


def from_callback(
    query: TgCallbackQuery,
    inbox: str,
    raw: dict[str, Any] | None,
    *,
    groups: GroupPolicy = "ignore",
) -> Event:
    # The spinner on the button stops in every case (answerCallbackQuery posts nothing).
    if not query.data:
        return Event(answer_callback=query.id, ignored="a callback without data")
    message = query.message
    if message is None:
        # A button of an inline-mode message, which the hub never sends: its chat is unknown.
        return Event(answer_callback=query.id, ignored="a button press in an unknown chat")
    if not message.chat.private and groups == "ignore":
        return Event(
            answer_callback=query.id, ignored=_group_ignored("a button press", message.chat)
        )
    sender = query.from_user
    chat = str(message.chat.id)
    label = button_label(message, query.data)
    return Event(
        message=InboundMessage(
            channel="telegram",
            inbox=inbox,
            chat_id=chat,
            sender_id=str(sender.id),
            provider_message_id=f"cb:{query.id}",
            text=label[:MAX_TEXT],
            contact=sender_hints(sender),
            reply_to_id=f"{chat}:{message.message_id}",
            private=message.chat.private,
            raw=raw,
        ),
        answer_callback=query.id,
    )


def button_label(message: TgMessage | None, data: str) -> str:
    """The text of the pressed button (its data may be a truncated or numbered label)."""
    if message is not None and message.reply_markup is not None:
        for row in message.reply_markup.inline_keyboard:
            for button in row:
                if button.callback_data == data:
                    return button.text
    return data


def callback_data(labels: list[str]) -> list[str]:
    """callback_data for each button: the label cut to 64 bytes, numbered when two collide."""
    seen: set[str] = set()
    out = []
    for n, label in enumerate(labels):
        data = truncate_bytes(label, CALLBACK_DATA_BYTES)
        if data in seen or not data:
            data = truncate_bytes(f"{n}|{label}", CALLBACK_DATA_BYTES)
        seen.add(data)
        out.append(data)
    return out


def truncate_bytes(text: str, limit: int) -> str:
    return text.encode("utf-8")[:limit].decode("utf-8", "ignore")


# Membership -------------------------------------------------------------------------------


def from_member_update(change: TgChatMemberUpdated) -> Event:
    status = change.new_chat_member.status
    if change.chat.private:
        if status == "kicked":
            return Event(blocked_by=change.from_user.id)
        return Event(ignored=f"the bot is now {status!r} in a private chat")
    # Someone added the bot to a group (or removed it): worth a line for whoever runs the hub.
    return Event(
        ignored=f"the bot is now {status!r} in {change.chat.type} chat {change.chat.id}",
        notice=True,
    )


# Text -------------------------------------------------------------------------------------

TEXT_LIMIT = 4096  # Telegram counts UTF-16 code units


def split_text(text: str, limit: int = TEXT_LIMIT) -> list[str]:
    return split_parts(text, limit)
