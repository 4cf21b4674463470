"""Settings from the environment and `.env`; every one is documented in `.env.example`."""

from __future__ import annotations

import ipaddress
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_rates(text: str) -> dict[str, float]:
    """ "telegram=25,sms=1" → {"telegram": 25.0, "sms": 1.0} (messages a second)."""
    rates: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        try:
            rate = float(value)
        except ValueError:
            raise ValueError(f"bad rate {part!r}: use channel=messages_per_second") from None
        if rate <= 0:
            raise ValueError(f"bad rate {part!r}: it must be above zero")
        rates[name.strip()] = rate
    return rates


def parse_networks(text: str) -> tuple[Network, ...]:
    """ "10.0.0.1, 192.168.0.0/16, ::1" → networks; ValueError names a bad entry."""
    networks = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"not an IP address or network: {item!r}") from None
    return tuple(networks)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    database_url: str | None = None
    redis_url: str | None = None
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    hub_llm_model: str = "gpt-4o-mini"
    # Which brain answers clients: auto = the LLM with a key, else the offline rules.
    hub_bot: Literal["auto", "llm", "offline", "off"] = "auto"
    # Bot turns in flight at once per process: with a model taking a second a turn, this is
    # about how many client messages a second one process answers.
    hub_bot_turns: int = Field(default=64, ge=1, le=1000)
    hub_llm_timeout_s: float = Field(default=30.0, gt=0)
    hub_llm_retries: int = Field(default=2, ge=0, le=10)
    hub_llm_max_rounds: int = Field(default=6, ge=1, le=20)
    hub_llm_history_tokens: int = Field(default=3000, ge=200)
    hub_llm_max_tokens: int = Field(default=400, ge=16, le=32000)
    hub_data_dir: Path = Path("./hub-data")
    hub_timezone: str = "Europe/Kyiv"
    hub_currency: str = Field(default="UAH", pattern="^[A-Z]{3}$")
    hub_secret_key: SecretStr | None = None
    hub_public_url: str | None = None
    hub_default_region: str = "UA"
    hub_default_language: str = "uk"

    # The pipeline.
    hub_inbound_shards: int = Field(default=8, ge=1, le=1024)
    hub_claim_idle_ms: int = Field(default=30_000, ge=1)
    hub_max_deliveries: int = Field(default=5, ge=1)
    hub_stream_maxlen: int = Field(default=100_000, ge=1_000)
    hub_shard_lease_ms: int = Field(default=10_000, ge=100)
    hub_outbound_attempts: int = Field(default=5, ge=1)
    hub_outbound_backoff_ms: int = Field(default=500, ge=1)
    hub_outbound_backoff_max_ms: int = Field(default=60_000, ge=1)
    # Redis connections of one process; past it a command waits for a free one (a blocking
    # pool) rather than failing as if Redis were down.
    hub_redis_max_connections: int = Field(default=64, ge=8, le=10_000)

    # Reminders, re-engagement and broadcasts (hub/jobs/scheduler.py).
    hub_scheduler: bool = True
    hub_scheduler_interval_s: float = Field(default=2.0, gt=0, le=300)
    hub_scheduler_batch: int = Field(default=200, ge=1, le=5000)
    hub_scheduler_lease_s: int = Field(default=300, ge=5)
    # Messages a second the scheduler may start per channel, shared by all hub processes:
    # Telegram allows a bot about 30/s, a Twilio long code 1/s (a messaging service more).
    hub_send_rates: str = "telegram=25,viber=20,sms=1,email=2,instagram=1"
    # Viber bills messages a bot starts (bots created since 2024): false keeps Viber to the
    # 24 hours after the client's last message, like Instagram.
    hub_viber_bot_initiated: bool = True
    hub_reengage_every_min: int = Field(default=60, ge=1)

    # Behind a reverse proxy (docs/security.md): the proxies whose X-Forwarded-For and
    # X-Forwarded-Proto are believed, as IPs or networks ("127.0.0.1, 10.0.0.0/8"). Unset: no
    # one's, and the TCP peer is the client.
    hub_trusted_proxies: str = ""
    # /metrics: answered only with "Authorization: Bearer <this token>"; unset, it is off on the
    # main address. HUB_METRICS_LISTEN (host:port) serves it without a token on an address of
    # its own, for a Prometheus on a private network.
    hub_metrics_token: SecretStr | None = None
    hub_metrics_listen: str | None = None

    # Staff sessions.
    hub_session_days: int = Field(default=14, ge=1)
    # Argon2 cost of staff password hashes (argon2-cffi's defaults: 3 passes over 64 MiB).
    hub_argon2_time_cost: int = Field(default=3, ge=1, le=20)
    hub_argon2_memory_kib: int = Field(default=65536, ge=32, le=4 * 1024 * 1024)

    # Web chat.
    hub_webchat_enabled: bool = True
    hub_webchat_inbox: str = "site"

    # Telegram: one bot token, or several as "inbox=token,inbox=token" (one inbox per bot).
    telegram_bot_tokens: SecretStr | None = None
    telegram_api_url: str = "https://api.telegram.org"
    # webhook needs HUB_PUBLIC_URL; polling works behind NAT; auto picks by HUB_PUBLIC_URL.
    telegram_mode: Literal["auto", "webhook", "polling"] = "auto"
    # Checked on every webhook call (X-Telegram-Bot-Api-Secret-Token); derived if unset.
    telegram_webhook_secret: SecretStr | None = None
    # Groups, supergroups and channels: ignore (acknowledged, not stored) or staff (stored and
    # handed to staff; the bot never answers there, since everyone in a group reads it).
    telegram_groups: Literal["ignore", "staff"] = "ignore"

    # Viber bot.
    viber_bot_token: SecretStr | None = None
    viber_bot_name: str = "Salon"
    viber_bot_avatar: str | None = None
    viber_api_url: str = "https://chatapi.viber.com/pa"
    viber_inbox: str = "main"
    # The welcome sent when a client opens the chat; unset: the uk/en/ru text from prompts/,
    # empty: no welcome.
    viber_greeting: str | None = None

    # SMS through Twilio.
    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_from_number: str | None = None
    twilio_messaging_service_sid: str | None = None
    twilio_api_url: str = "https://api.twilio.com"
    sms_inbox: str = "main"

    # Email: the salon's mailbox over IMAP (in) and SMTP (out). On when both hosts are set.
    email_address: str | None = None  # From: and the mailbox's own address
    email_from_name: str | None = None
    email_username: str | None = None  # IMAP login (and SMTP's, unless set apart)
    email_password: SecretStr | None = None
    email_imap_host: str | None = None
    email_imap_port: int | None = None  # default by security: 993 ssl, 143 otherwise
    email_imap_security: Literal["ssl", "starttls", "none"] = "ssl"
    email_imap_folder: str = "INBOX"
    # Used when the server has no IDLE, and as IDLE's re-check period when it has.
    email_poll_interval_s: float = Field(default=60.0, gt=0)
    email_smtp_host: str | None = None
    email_smtp_port: int | None = None  # default by security: 465 ssl, 587 starttls, 25 none
    email_smtp_security: Literal["ssl", "starttls", "none"] = "starttls"
    email_smtp_username: str | None = None
    email_smtp_password: SecretStr | None = None
    email_inbox: str = "main"

    # Instagram: "official" (Meta's Messaging API, business accounts) or "private"
    # (instagrapi logs in as the account: risky, see the README); auto picks by credentials.
    instagram_mode: Literal["auto", "official", "private", "off"] = "auto"
    instagram_inbox: str = "main"
    # Official mode.
    instagram_access_token: SecretStr | None = None
    instagram_app_secret: SecretStr | None = None  # checks X-Hub-Signature-256
    instagram_verify_token: SecretStr | None = None  # the webhook subscription handshake
    instagram_account_id: str | None = None
    instagram_api_url: str = "https://graph.instagram.com"
    instagram_api_version: str = "v21.0"
    # Private mode.
    instagram_username: str | None = None
    instagram_password: SecretStr | None = None
    instagram_poll_interval_s: float = Field(default=60.0, ge=5)
    instagram_poll_jitter_s: float = Field(default=20.0, ge=0)
    instagram_private_api_url: str | None = None  # tests only: a local fake of the private API

    @field_validator("hub_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name)") from None
        return value

    @field_validator("hub_send_rates")
    @classmethod
    def _rates(cls, value: str) -> str:
        parse_rates(value)
        return value

    @field_validator("hub_trusted_proxies")
    @classmethod
    def _proxies(cls, value: str) -> str:
        parse_networks(value)
        return value

    @field_validator("hub_metrics_listen")
    @classmethod
    def _listen(cls, value: str | None) -> str | None:
        if value:
            host, _, port = value.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"HUB_METRICS_LISTEN must be host:port, not {value!r}")
        return value

    @field_validator("hub_default_region")
    @classmethod
    def _upper_region(cls, value: str) -> str:
        return value.upper()

    @cached_property
    def send_rates(self) -> dict[str, float]:
        return parse_rates(self.hub_send_rates)

    @cached_property
    def trusted_proxies(self) -> tuple[Network, ...]:
        return parse_networks(self.hub_trusted_proxies)

    @cached_property
    def data_dir(self) -> Path:
        return self.hub_data_dir.expanduser().resolve()

    @property
    def cookie_secure(self) -> bool:
        return bool(self.hub_public_url and self.hub_public_url.startswith("https://"))

    def sqlite_url(self) -> str:
        return f"sqlite+aiosqlite:///{self.data_dir / 'hub.sqlite3'}"

    def effective_database_url(self) -> str:
        return self.database_url or self.sqlite_url()


def load_settings(**overrides: object) -> Settings:
    return Settings(**overrides)  # type: ignore[arg-type]
