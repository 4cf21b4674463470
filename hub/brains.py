"""Which brain answers clients: chosen from the settings, given the hub's database and clock."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from sqlalchemy.ext.asyncio import async_sessionmaker

from bots.base import Responder, SilentResponder
from bots.offline import OfflineBrain
from bots.tools import Tools
from hub.config import Settings

log = logging.getLogger(__name__)


def build_responder(
    settings: Settings, sessions: async_sessionmaker, clock: Callable[[], datetime]
) -> Responder:
    choice = settings.hub_bot
    if choice == "off":
        return SilentResponder()
    tools = Tools(
        sessions,
        clock=clock,
        timezone=settings.hub_timezone,
        currency=settings.hub_currency,
        region=settings.hub_default_region,
    )
    key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else ""
    if choice == "llm" or (choice == "auto" and key):
        if not key:
            raise ValueError("HUB_BOT=llm needs OPENAI_API_KEY")
        from bots.llm import LlmBrain, build_client  # the openai client only when used

        log.info("the AI administrator uses the model %s", settings.hub_llm_model)
        return LlmBrain(
            tools,
            sessions,
            client=build_client(
                key,
                settings.openai_base_url,
                timeout=settings.hub_llm_timeout_s,
                retries=settings.hub_llm_retries,
            ),
            model=settings.hub_llm_model,
            clock=clock,
            timezone=settings.hub_timezone,
            currency=settings.hub_currency,
            max_rounds=settings.hub_llm_max_rounds,
            history_tokens=settings.hub_llm_history_tokens,
            max_tokens=settings.hub_llm_max_tokens,
        )
    log.info("the AI administrator uses the offline brain (no OPENAI_API_KEY)")
    return OfflineBrain(
        tools,
        sessions,
        clock=clock,
        timezone=settings.hub_timezone,
        currency=settings.hub_currency,
    )
