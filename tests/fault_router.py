"""A healthy router process, run by tests/test_faults_pipeline.py and killed there (SIGKILL)
while it works through a backlog."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from hub.pipeline.router import RouterHooks
from hub.state import Hub
from tests.conftest import test_settings


async def main(db: str, redis_url: str, data_dir: str) -> None:
    settings = test_settings(db, redis_url, Path(data_dir))
    hub = Hub(settings, run_dispatcher=False, run_bots=False)
    await hub.open()
    # A little work inside each transaction (a millisecond a message, entries read and not
    # yet acknowledged), so that the kill lands mid-batch, as on a loaded machine, and not in
    # the moment between one read's acks and the next read.
    assert hub.router is not None
    hub.router.hooks = RouterHooks(before_commit=lambda msg: time.sleep(0.001))
    await hub.start()
    await asyncio.sleep(120)  # killed long before this
    sys.exit(3)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
