"""Staff accounts. Passwords are stored as argon2 hashes only."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from crm_store import audit
from crm_store.contacts import normalize_email
from crm_store.models import Staff

ROLES = ("owner", "admin", "master")
MIN_PASSWORD = 8
_hasher = PasswordHasher()
# Verified against when the email is unknown, so a wrong email costs as long as a wrong password.
_DUMMY_HASH = _hasher.hash("not-a-real-password")


def configure_hashing(*, time_cost: int, memory_kib: int) -> None:
    """Argon2's cost for new hashes (a small server may want less memory; the test suite
    wants far less time). Existing hashes carry their own parameters and still verify; a
    login rehashes one made with other parameters."""
    global _hasher, _DUMMY_HASH
    if (_hasher.time_cost, _hasher.memory_cost) == (time_cost, memory_kib):
        return
    _hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib)
    _DUMMY_HASH = _hasher.hash("not-a-real-password")


class StaffError(ValueError):
    pass


class StaffNotFound(StaffError):
    pass


def hash_password(password: str) -> str:
    return _hasher.hash(password)


async def add_staff(
    session: AsyncSession,
    *,
    email: str,
    password: str,
    role: str,
    name: str = "",
    language: str = "uk",
    actor: audit.Actor = "system",
    by_staff_id: int | None = None,
) -> Staff:
    normalized = normalize_email(email)
    if normalized is None:
        raise StaffError(f"not an email address: {email!r}")
    if role not in ROLES:
        raise StaffError(f"role must be one of {', '.join(ROLES)}")
    if len(password) < MIN_PASSWORD:
        raise StaffError(f"the password needs at least {MIN_PASSWORD} characters")
    if await staff_by_email(session, normalized) is not None:
        raise StaffError(f"{normalized} already has an account")
    staff = Staff(
        email=normalized,
        password_hash=hash_password(password),
        role=role,
        name=name or normalized.split("@")[0],
        language=language,
    )
    session.add(staff)
    await session.flush()
    audit.record(
        session,
        actor=actor,
        staff_id=by_staff_id,
        entity="staff",
        entity_id=staff.id,  # type: ignore[arg-type]
        action="created",
        changes={"email": staff.email, "role": staff.role, "name": staff.name},
    )
    return staff


async def set_active(
    session: AsyncSession,
    staff_id: int,
    active: bool,
    *,
    actor: audit.Actor = "system",
    by_staff_id: int | None = None,
) -> Staff:
    """Switch an account on or off (audited). The last active owner can't be switched off:
    nobody could manage the salon any more. The caller ends an account's sessions."""
    staff = await session.get(Staff, staff_id, with_for_update=True)
    if staff is None:
        raise StaffNotFound(f"no staff member with id {staff_id}")
    if staff.active == active:
        return staff
    if not active and staff.role == "owner":
        owners = await session.exec(
            select(Staff.id).where(Staff.role == "owner", Staff.active, Staff.id != staff_id)  # type: ignore[arg-type]
        )
        if owners.first() is None:
            raise StaffError("the last active owner can't be deactivated")
    staff.active = active
    session.add(staff)
    audit.record(
        session,
        actor=actor,
        staff_id=by_staff_id,
        entity="staff",
        entity_id=staff_id,
        action="activated" if active else "deactivated",
        changes={"active": active},
    )
    await session.flush()
    return staff


async def staff_by_email(session: AsyncSession, email: str) -> Staff | None:
    return (await session.exec(select(Staff).where(Staff.email == email))).first()


async def authenticate(session: AsyncSession, email: str, password: str) -> Staff | None:
    normalized = normalize_email(email) or ""
    staff = await staff_by_email(session, normalized) if normalized else None
    try:
        _hasher.verify(staff.password_hash if staff else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return None
    if staff is None or not staff.active:
        return None
    if _hasher.check_needs_rehash(staff.password_hash):
        staff.password_hash = hash_password(password)
    return staff
