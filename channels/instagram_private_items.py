"""Instagram Direct items as the private API returns them (direct_v2/inbox, pending_inbox,
threads/<id>), read leniently and turned into hub messages.

We parse the raw JSON ourselves rather than through instagrapi's typed extractors: those
validate whole threads at once (a shared post missing one field fails the thread), and an
odd item must never stop the poller. Each item becomes text plus attachments:

- `text`: the text; `link`: the text (it holds the URL);
- `media` (photo or video), `raven_media`/`visual_media` (disappearing), `animated_media`
  (GIF): an attachment with the CDN URL;
- `voice_media`: a `voice` attachment (audio/mp4);
- `reel_share`: a reply to (or mention in, or reaction to) a story: "[reply to story] …";
- `story_share`, `media_share`, `clip`, `felix_share`, `xma_*`: "[shared post] <url>" etc.;
- `like`: the heart; `placeholder`: Instagram's own text ("message unavailable");
- `action_log` (reactions, "liked a message"), `video_call_event`: not client messages.
Anything else becomes "[instagram <type>]" so staff see that something came.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hub.messages import Attachment, ContactHints, InboundMessage

MAX_TEXT = 20_000
# Items that are not messages from a person: never published.
SILENT_TYPES = frozenset({"action_log", "video_call_event", "expired_placeholder"})
POST_URL = "https://www.instagram.com/p/{code}/"
REEL_URL = "https://www.instagram.com/reel/{code}/"


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


def _as_str(value: Any) -> Any:
    # Instagram sends ids as numbers in some places and strings in others.
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class IgUser(_Lenient):
    pk: str
    username: str | None = None
    full_name: str | None = None

    _pk = field_validator("pk", mode="before")(_as_str)


class IgItem(_Lenient):
    item_id: str
    user_id: str
    timestamp: int  # microseconds since the epoch
    item_type: str = "unknown"
    text: str | None = None
    raw: dict[str, Any] = Field(default_factory=dict)

    _ids = field_validator("item_id", "user_id", mode="before")(_as_str)

    @field_validator("timestamp", mode="before")
    @classmethod
    def _micros(cls, value: Any) -> Any:
        return int(value) if isinstance(value, str) and value.isdigit() else value

    @property
    def sent_at(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp / 1_000_000, UTC)


class IgThread(_Lenient):
    thread_id: str
    users: list[IgUser] = Field(default_factory=list)
    items: list[dict[str, Any]] = Field(default_factory=list)
    pending: bool = False
    is_group: bool = False
    thread_title: str | None = None
    has_older: bool = False
    oldest_cursor: str | None = None
    last_activity_at: int | None = None

    _id = field_validator("thread_id", mode="before")(_as_str)


def parse_item(raw: dict[str, Any]) -> IgItem | None:
    """The item, or None when it lacks what every message has (id, author, time)."""
    try:
        item = IgItem.model_validate(raw)
    except ValidationError:
        return None
    item.raw = raw
    return item


def parse_thread(raw: Any) -> IgThread | None:
    if not isinstance(raw, dict):
        return None
    try:
        return IgThread.model_validate(raw)
    except ValidationError:
        return None


# What an item says ---------------------------------------------------------------------


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _best_image(media: dict[str, Any]) -> str | None:
    candidates = _dict(media.get("image_versions2")).get("candidates")
    if isinstance(candidates, list) and candidates:
        best = max(
            (c for c in candidates if isinstance(c, dict) and c.get("url")),
            key=lambda c: int(c.get("width") or 0) * int(c.get("height") or 0),
            default=None,
        )
        if best:
            return str(best["url"])
    return None


def _best_video(media: dict[str, Any]) -> str | None:
    versions = media.get("video_versions")
    if isinstance(versions, list):
        for version in versions:
            if isinstance(version, dict) and version.get("url"):
                return str(version["url"])
    return None


def media_attachment(media: dict[str, Any]) -> Attachment | None:
    """A photo (media_type 1) or video (2) as the CDN serves it."""
    video = _best_video(media)
    if video and media.get("media_type") != 1:
        return Attachment(kind="video", url=video, ref=_ref(media), mime_type="video/mp4")
    image = _best_image(media)
    if image:
        return Attachment(kind="image", url=image, ref=_ref(media), mime_type="image/jpeg")
    return None


def _ref(media: dict[str, Any]) -> str | None:
    ident = media.get("id") or media.get("pk")
    return str(ident)[:200] if ident else None


def _post_url(media: dict[str, Any], *, reel: bool = False) -> str | None:
    code = media.get("code")
    if isinstance(code, str) and code:
        return (REEL_URL if reel else POST_URL).format(code=code)
    return None


def _caption(media: dict[str, Any]) -> str:
    caption = _dict(media.get("caption")).get("text")
    return str(caption).strip() if caption else ""


def _owner(media: dict[str, Any]) -> str:
    username = _dict(media.get("user")).get("username")
    return f"@{username}" if username else ""


def _join(*parts: str | None) -> str:
    return " ".join(p.strip() for p in parts if p and p.strip())


def _xma(raw: dict[str, Any]) -> tuple[str, str | None] | None:
    """The newer "xma" shares: a list of cards with a target URL and a title."""
    for key, label in (
        ("xma_clip", "[shared reel]"),
        ("xma_media_share", "[shared post]"),
        ("xma_story_share", "[shared story]"),
        ("xma_reel_share", "[reply to story]"),
        ("generic_xma", "[shared]"),
    ):
        cards = raw.get(key)
        if isinstance(cards, list) and cards and isinstance(cards[0], dict):
            card = cards[0]
            url = card.get("target_url") or card.get("preview_url")
            title = card.get("title_text") or card.get("header_title_text") or ""
            return label, _join(str(title), str(url) if url else None) or None
    return None


def describe(item: IgItem) -> tuple[str, list[Attachment]] | None:
    """The text and attachments a staff member should see; None for an item that is not a
    message (a reaction, a call event)."""
    raw = item.raw
    kind = item.item_type
    if kind in SILENT_TYPES:
        return None
    text = (item.text or "").strip()
    attachments: list[Attachment] = []

    if kind == "text":
        return text, []
    if kind == "link":
        link = _dict(raw.get("link"))
        context = _dict(link.get("link_context"))
        body = str(link.get("text") or text or context.get("link_url") or "").strip()
        return body, []
    if kind == "like":
        return str(raw.get("like") or "❤️"), []
    if kind == "media":
        found = media_attachment(_dict(raw.get("media")))
        return text, [found] if found else []
    if kind in ("raven_media", "visual_media"):
        visual = _dict(raw.get("visual_media")) or _dict(raw.get("raven_media"))
        found = media_attachment(_dict(visual.get("media")) or visual)
        return text or "[disappearing photo]", [found] if found else []
    if kind == "animated_media":
        images = _dict(_dict(raw.get("animated_media")).get("images"))
        url = _dict(images.get("fixed_height")).get("url")
        if url:
            attachments.append(Attachment(kind="image", url=str(url), mime_type="image/gif"))
        return text or "[GIF]", attachments
    if kind == "voice_media":
        media = _dict(_dict(raw.get("voice_media")).get("media"))
        audio = _dict(media.get("audio"))
        src = audio.get("audio_src")
        if src:
            attachments.append(
                Attachment(kind="voice", url=str(src), ref=_ref(media), mime_type="audio/mp4")
            )
        return text, attachments
    if kind == "reel_share":
        share = _dict(raw.get("reel_share"))
        share_type = share.get("type") or "reply"
        label = {
            "mention": "[mentioned you in a story]",
            "reaction": "[reacted to story]",
        }.get(str(share_type), "[reply to story]")
        story = media_attachment(_dict(share.get("media")))
        return _join(label, str(share.get("text") or text)), [story] if story else []
    if kind == "story_share":
        share = _dict(raw.get("story_share"))
        media = _dict(share.get("media"))
        story = media_attachment(media)
        if not media:  # an expired or private story: Instagram sends only a title/message
            return _join(
                "[shared story]", str(share.get("message") or share.get("title") or "")
            ), []
        return _join("[shared story]", _owner(media), text), [story] if story else []
    if kind == "media_share":
        media = _dict(raw.get("media_share"))
        return _join("[shared post]", _owner(media), _post_url(media), _caption(media)), []
    if kind == "clip":
        clip = _dict(raw.get("clip"))
        media = _dict(clip.get("clip")) or clip  # Instagram nests it twice, sometimes
        return _join("[shared reel]", _owner(media), _post_url(media, reel=True)), []
    if kind == "felix_share":
        video = _dict(_dict(raw.get("felix_share")).get("video"))
        return _join("[shared video]", _owner(video), _post_url(video)), []
    if kind == "profile":
        profile = _dict(raw.get("profile"))
        return _join("[shared profile]", f"@{profile.get('username')}"), []
    if kind == "location":
        location = _dict(raw.get("location"))
        return _join("[shared location]", str(location.get("name") or "")), []
    if kind == "placeholder":
        holder = _dict(raw.get("placeholder"))
        return _join(str(holder.get("title") or ""), str(holder.get("message") or "")) or (
            "[message unavailable]"
        ), []
    xma = _xma(raw)
    if xma:
        label, rest = xma
        return _join(label, rest, text), []
    return _join(f"[instagram {kind}]", text), []


def to_inbound(
    item: IgItem, thread: IgThread, *, inbox: str, users: dict[str, IgUser]
) -> InboundMessage | None:
    """The hub message for a client's item in a thread (None for a non-message)."""
    described = describe(item)
    if described is None:
        return None
    text, attachments = described
    sender = users.get(item.user_id)
    contact = ContactHints(
        display_name=(sender.full_name or sender.username or None) if sender else None,
        username=sender.username if sender else None,
    )
    return InboundMessage(
        channel="instagram",
        inbox=inbox,
        chat_id=thread.thread_id,
        sender_id=item.user_id,
        provider_message_id=item.item_id,
        sent_at=item.sent_at,
        text=text[:MAX_TEXT],
        attachments=attachments,
        contact=_trimmed(contact),
        # A group thread is read by all its members: staff answer it, never the bot.
        private=not thread.is_group,
        raw={"item_type": item.item_type, "thread_id": thread.thread_id},
    )


def _trimmed(contact: ContactHints) -> ContactHints:
    name = (contact.display_name or "").strip()[:200] or None
    username = (contact.username or "").strip()[:200] or None
    return contact.model_copy(update={"display_name": name, "username": username})
