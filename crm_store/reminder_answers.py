"""Which appointment a client's "Confirm" / "Cancel" / "Reschedule" answers.

A reminder goes out with those three quick replies; the client's tap comes back as an ordinary
message, with nothing in it that names the appointment. It answers the latest reminder the
client was sent lately, for an appointment that is still ahead and not cancelled; anything
older is not an answer to a reminder but a message like any other.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from crm_store.models import Appointment, ScheduledMessage

# A reminder older than this is not what a "Cancel" answers.
ANSWER_WINDOW = timedelta(days=3)
LIVE = ("booked", "confirmed")


async def latest_reminded_appointment(
    session: AsyncSession, client_id: int, now: datetime
) -> Appointment | None:
    """The appointment of the client's latest reminder sent in ANSWER_WINDOW, if it is still
    booked or confirmed and starts after `now`."""
    now = now.astimezone(UTC)  # SQLite compares the stored UTC wall time as text
    query = (
        select(Appointment)
        .join(ScheduledMessage, col(ScheduledMessage.appointment_id) == col(Appointment.id))
        .where(
            ScheduledMessage.kind == "reminder",
            ScheduledMessage.status == "sent",
            ScheduledMessage.client_id == client_id,
            col(ScheduledMessage.sent_at) >= now - ANSWER_WINDOW,
            col(ScheduledMessage.sent_at) <= now,
            Appointment.client_id == client_id,
            col(Appointment.status).in_(LIVE),
            col(Appointment.start_at) > now,
        )
        .order_by(col(ScheduledMessage.sent_at).desc(), col(ScheduledMessage.id).desc())
        .limit(1)
    )
    return (await session.exec(query)).first()
