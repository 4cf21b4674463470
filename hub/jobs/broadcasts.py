"""What a broadcast row says: the broadcast's text with {name} filled in for the client.

Registered in hub.notices.RENDERERS at import (the scheduler imports this module). It runs just
before the send, so a broadcast cancelled meanwhile, a client who withdrew consent, or a card
merged into another one (that card has a row of its own if it is in the segment) is skipped.
"""

from __future__ import annotations

import re

from crm_store.models import Broadcast
from hub.jobs.notices import RENDERERS, Notice, RenderContext, Skip, fill, first_name
from prompts import LANGUAGES, load_json

# "Hello, {name}!" for a client without a name: "Hello!", not "Hello, !".
_NAME_WITH_COMMA = re.compile(r",?[ \t]*\{name\}")


async def render_broadcast(ctx: RenderContext) -> Notice:
    row = ctx.row
    broadcast = await ctx.session.get(Broadcast, row.broadcast_id) if row.broadcast_id else None
    if broadcast is None:
        raise Skip("the broadcast is gone")
    if broadcast.status == "cancelled":
        raise Skip("the broadcast was cancelled")
    if not ctx.client.marketing_consent:
        raise Skip("no marketing consent")
    if ctx.client.merged_into_id is not None:
        raise Skip("the card was merged into another one")
    return Notice(text=personal_text(broadcast.text, first_name(ctx.client)))


def personal_text(text: str, name: str) -> str:
    if name:
        return fill(text, name=name)
    # Without a name the placeholder goes with the comma before it; a text that began with
    # it begins with what followed, comma dropped, capitalised.
    plain = fill(_NAME_WITH_COMMA.sub("", text))
    if text.lstrip().startswith("{name}"):
        plain = plain.lstrip(" ,.!:;")
        plain = plain[:1].upper() + plain[1:]
    return plain


def templates(language: str | None = None) -> list[dict[str, str]]:
    """The ready texts staff start from (prompts/broadcast/templates.json): id, language,
    title, text; in one language or all."""
    table = load_json("broadcast/templates.json")
    return [
        {"id": template_id, "language": code, "title": body["title"], "text": body["text"]}
        for code in LANGUAGES
        if language in (None, code)
        for template_id, body in table.get(code, {}).items()
    ]


RENDERERS["broadcast"] = render_broadcast
