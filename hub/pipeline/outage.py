"""Outages: the database or Redis out of reach, as opposed to an entry that cannot succeed.

A consumer waits an outage out with the entry in hand (hub.consumer) instead of counting a
delivery: a few seconds without PostgreSQL would otherwise send good messages to hub:dead.
"""

from __future__ import annotations

import asyncpg
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy import exc as sa_exc

# OSError covers a refused or reset connection (asyncpg raises ConnectionRefusedError as is
# while it connects) and socket timeouts. SQLAlchemy's OperationalError is what SQLite says
# for "database is locked" or a full disk; its InterfaceError and TimeoutError (no pooled
# connection came free) are the driver or the pool cut off from the server.
_OUTAGES: tuple[type[BaseException], ...] = (
    OSError,
    RedisConnectionError,
    RedisTimeoutError,
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    # PostgreSQL shutting down or still starting up (a restart, a fail-over); not the rest of
    # its class 57 (a statement timeout may well be the entry's own doing).
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
)
_CHAIN_LIMIT = 8


def is_outage(exc: BaseException) -> bool:
    """True when `exc` (or what it was raised from) says a server is out of reach, so trying
    the same entry again later will do. Only explicit causes (`raise … from`) are followed,
    as SQLAlchemy wraps the driver's error: an error merely raised while another was being
    handled says nothing about it."""
    current: BaseException | None = exc
    for _ in range(_CHAIN_LIMIT):
        if current is None:
            return False
        if isinstance(current, _OUTAGES):
            return True
        if isinstance(current, sa_exc.DBAPIError) and current.connection_invalidated:
            return True  # the connection died mid-statement (asyncpg: "closed in the middle")
        current = current.__cause__
    return False


def outage_delay(attempt: int, *, base: float = 0.1, cap: float = 5.0) -> float:
    """The wait before try number `attempt` + 1 of an outage: doubling, capped."""
    return min(cap, base * 2 ** min(attempt, 16))
