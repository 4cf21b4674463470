"""The salon's own settings and the booking rules that follow from them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlmodel.ext.asyncio.session import AsyncSession

from crm_store import audit
from crm_store.audit import Actor
from crm_store.models import Business

BUSINESS_ID = 1
STEPS = (5, 10, 15, 20, 30, 60)
EDITABLE = (
    "name",
    "timezone",
    "currency",
    "slot_step_min",
    "lead_min",
    "horizon_days",
    "phone",
    "address",
    "hours_text",
    "reminder_offsets_min",
    "quiet_start_min",
    "quiet_end_min",
)


class BusinessError(ValueError):
    pass


@dataclass(frozen=True)
class Rules:
    """What slot search and booking need to know about the salon."""

    tz: ZoneInfo
    step_min: int = 15
    lead: timedelta = timedelta(minutes=60)
    horizon: timedelta = timedelta(days=60)
    currency: str = "UAH"
    # Reminders before an appointment, and the quiet hours (minutes from local midnight).
    reminder_offsets_min: tuple[int, ...] = (1440, 120)
    quiet_start_min: int = 21 * 60
    quiet_end_min: int = 9 * 60

    @classmethod
    def of(cls, business: Business) -> Rules:
        return cls(
            tz=ZoneInfo(business.timezone),
            step_min=business.slot_step_min,
            lead=timedelta(minutes=business.lead_min),
            horizon=timedelta(days=business.horizon_days),
            currency=business.currency,
            reminder_offsets_min=tuple(business.reminder_offsets_min or ()),
            quiet_start_min=business.quiet_start_min,
            quiet_end_min=business.quiet_end_min,
        )

    def window(self, now: datetime) -> tuple[datetime, datetime]:
        """The earliest and the latest start a client may book at `now`."""
        return now + self.lead, now + self.horizon


async def get_business(
    session: AsyncSession, *, timezone: str = "Europe/Kyiv", currency: str = "UAH"
) -> Business:
    """The saved settings, or the defaults (from the environment) when none were saved."""
    saved = await session.get(Business, BUSINESS_ID)
    if saved is not None:
        return saved
    return Business(id=BUSINESS_ID, timezone=timezone, currency=currency)


async def update_business(
    session: AsyncSession,
    changes: dict[str, Any],
    *,
    actor: Actor,
    staff_id: int | None = None,
    timezone: str = "Europe/Kyiv",
    currency: str = "UAH",
) -> Business:
    unknown = set(changes) - set(EDITABLE)
    if unknown:
        raise BusinessError(f"unknown business settings: {', '.join(sorted(unknown))}")
    _validate(changes)
    business = await get_business(session, timezone=timezone, currency=currency)
    before = {key: getattr(business, key) for key in changes}
    for key, value in changes.items():
        setattr(business, key, value)
    session.add(business)
    await session.flush()
    diff = {k: [before[k], v] for k, v in changes.items() if before[k] != v}
    if diff:
        audit.record(
            session,
            actor=actor,
            staff_id=staff_id,
            entity="business",
            entity_id=BUSINESS_ID,
            action="update",
            changes=diff,
        )
    return business


def _validate(changes: dict[str, Any]) -> None:
    if "timezone" in changes:
        try:
            ZoneInfo(str(changes["timezone"]))
        except (ZoneInfoNotFoundError, ValueError):
            raise BusinessError(f"unknown time zone {changes['timezone']!r}") from None
    step = changes.get("slot_step_min")
    if step is not None and step not in STEPS:
        # Steps that divide an hour keep the grid aligned across daylight-saving shifts.
        raise BusinessError(f"slot_step_min must be one of {', '.join(map(str, STEPS))}")
    if changes.get("lead_min", 0) < 0:
        raise BusinessError("lead_min can't be negative")
    if "horizon_days" in changes and not 1 <= changes["horizon_days"] <= 730:
        raise BusinessError("horizon_days must be between 1 and 730")
    offsets = changes.get("reminder_offsets_min")
    if offsets is not None and (
        not isinstance(offsets, list)
        or len(offsets) > 5
        or not all(isinstance(o, int) and 10 <= o <= 14 * 1440 for o in offsets)
    ):
        raise BusinessError(
            "reminder_offsets_min must be a list of at most 5 whole minutes, 10 to 20160"
        )
    for key in ("quiet_start_min", "quiet_end_min"):
        if key in changes and not (isinstance(changes[key], int) and 0 <= changes[key] < 1440):
            raise BusinessError(f"{key} must be whole minutes from midnight, 0 to 1439")
    currency = changes.get("currency")
    if currency is not None and not (len(currency) == 3 and currency.isalpha()):
        raise BusinessError("currency must be a three-letter ISO 4217 code")
