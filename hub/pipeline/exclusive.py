"""One job, one process: a Redis lease that a poller (IMAP, Instagram's private API) holds while
it runs, so several hub processes never read one mailbox or log in to one account at once.

The holder renews the lease every third of its life; if a renewal finds the lease gone (Redis
restarted, the process stalled past the TTL and another took over), the job is cancelled at once
and the process goes back to waiting. A dead holder's lease simply expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from hub.pipeline.leases import RELEASE_SCRIPT, RENEW_SCRIPT

log = logging.getLogger(__name__)
PREFIX = "hub:exclusive:"


async def run_exclusive(
    redis: Redis,
    owner: str,
    name: str,
    job: Callable[[], Awaitable[None]],
    *,
    lease_ms: int = 15_000,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    key = PREFIX + name
    renew = redis.register_script(RENEW_SCRIPT)
    release = redis.register_script(RELEASE_SCRIPT)
    period = lease_ms / 3000
    standing_by = False
    while True:
        try:
            acquired = await redis.set(key, owner, nx=True, px=lease_ms)
            cancel_if_asked()
        except Exception as exc:  # Redis away for a moment: try again, never crash the channel
            log.warning("lease of %s unavailable: %s", name, exc)
            acquired = False
        if not acquired:
            if not standing_by:
                log.info("%s runs in another hub process; this one stands by", name)
                standing_by = True
            await sleep(period)
            cancel_if_asked()
            continue
        standing_by = False
        task = asyncio.create_task(job(), name=f"exclusive:{name}")
        try:
            if await _held_until_done(task, renew, key, owner, lease_ms, period):
                return task.result()  # the job's own error, if it failed
            log.warning("lost the lease of %s: stopped it here", name)
        finally:
            if not task.done():
                task.cancel()
                # asyncio.wait, not `await task` under suppress(CancelledError): that would
                # also swallow our own cancellation (a channel stopping) and keep us running.
                await asyncio.wait({task})
            with contextlib.suppress(Exception):
                await release(keys=[key], args=[owner])


async def _held_until_done(
    task: asyncio.Task[None], renew: AsyncScript, key: str, owner: str, lease_ms: int, period: float
) -> bool:
    """Renew the lease while the job runs: True when the job ended, False when the lease was
    lost (or could not be renewed, which must count as lost: another process may take it)."""
    while True:
        done, _ = await asyncio.wait({task}, timeout=period)
        if done:
            return True
        try:
            renewed = await renew(keys=[key], args=[owner, lease_ms])
        except Exception:
            renewed = False
        cancel_if_asked()
        if not renewed:
            return False


def cancel_if_asked() -> None:
    """Honour a cancellation that a library swallowed: redis-py 8 can turn a cancel that lands
    mid-read into a connection error it retries, so the task carries on with its cancel
    request pending (Task.cancelling() > 0) and a stop would wait for it forever."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
