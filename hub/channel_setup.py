"""Which channels run: the web chat, and each provider channel whose credentials are set.

A provider channel module exposes `from_settings(settings, ctx) -> Channel | None` (None
when its credentials are missing: the channel is off). Modules are imported only when
listed here and some of their settings are given (not left at their defaults), so a hub
without, say, Telegram never loads aiogram (over 100 MiB of pydantic models, resident for
the life of the process).
"""

from __future__ import annotations

import importlib
import logging

from channels.base import Channel, ChannelContext
from channels.webchat import WebChatChannel
from hub.config import Settings
from hub.forwarded import secure_cookies

log = logging.getLogger(__name__)

# channel name -> module; the module's `from_settings` decides whether it is on.
PROVIDER_MODULES = {
    "telegram": "channels.telegram",
    "viber": "channels.viber",
    "sms": "channels.sms",
    "email": "channels.email",
    "instagram": "channels.instagram",
}
# channel name -> the prefixes of its settings: with all of them at their defaults the
# channel is off, and its module is not imported.
SETTING_PREFIXES = {
    "telegram": ("telegram_",),
    "viber": ("viber_",),
    "sms": ("twilio_", "sms_"),
    "email": ("email_",),
    "instagram": ("instagram_",),
}


def configured(settings: Settings, name: str) -> bool:
    """Whether any of a channel's settings differs from its default."""
    prefixes = SETTING_PREFIXES.get(name)
    if prefixes is None:
        return True  # a channel without a known prefix is asked, as before
    return any(
        getattr(settings, field) != info.get_default(call_default_factory=True)
        for field, info in type(settings).model_fields.items()
        if field.startswith(prefixes)
    )


def build_channels(settings: Settings, ctx: ChannelContext) -> dict[str, Channel]:
    channels: dict[str, Channel] = {}
    if settings.hub_webchat_enabled:
        channels["webchat"] = WebChatChannel(
            ctx,
            settings.hub_webchat_inbox,
            secure_cookie=lambda request: secure_cookies(request, settings.cookie_secure),
        )
    for name, module_name in PROVIDER_MODULES.items():
        if not configured(settings, name):
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue  # not built in this version
        channel = module.from_settings(settings, ctx)
        if channel is not None:
            channels[name] = channel
            log.info("channel %s is on", name)
    return channels
