"""A hub process that only dispatches (no router, bots or scheduler), sending SMS through a
fake Twilio: tests/test_dispatch_once.py runs two at once and stops them with SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from pydantic import SecretStr

from hub.state import Hub
from tests.conftest import test_settings
from tests.fakes import twilio_server


async def main(db: str, redis_url: str, data_dir: str, twilio_url: str) -> None:
    settings = test_settings(
        db,
        redis_url,
        Path(data_dir),
        twilio_account_sid=twilio_server.ACCOUNT_SID,
        twilio_auth_token=SecretStr(twilio_server.AUTH_TOKEN),
        twilio_from_number=twilio_server.FROM_NUMBER,
        twilio_api_url=twilio_url,
        hub_public_url=None,
        sms_inbox="main",
        # Nobody dies here: on a busy machine a short idle time would hand live entries to
        # the other process (correct, but each such entry waits for its owner to finish).
        hub_claim_idle_ms=10_000,
    )
    hub = Hub(settings, run_router=False, run_bots=False)
    await hub.open()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await hub.start()
    print("ready", flush=True)
    try:
        await asyncio.wait_for(stop.wait(), 120)  # stopped long before this
    finally:
        await hub.stop()
        await hub.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
