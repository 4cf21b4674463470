"""A router of its own for `hub bench pipeline --routers N`: settings from the environment,
"ready" on stdout once started, a clean stop on SIGTERM."""

from __future__ import annotations

import asyncio
import signal

from hub.config import Settings
from hub.state import Hub


async def main() -> None:
    hub = Hub(Settings(), run_dispatcher=False, run_bots=False, run_scheduler=False)
    await hub.open()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await hub.start()
        print("ready", flush=True)
        await stop.wait()
    finally:
        await hub.stop()
        await hub.close()


if __name__ == "__main__":
    asyncio.run(main())
