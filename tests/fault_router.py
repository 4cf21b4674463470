"""A healthy router process, run by tests/test_faults_pipeline.py and killed there (SIGKILL)
while it works through a backlog."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from hub.state import Hub
from tests.conftest import test_settings


async def main(db: str, redis_url: str, data_dir: str) -> None:
    settings = test_settings(db, redis_url, Path(data_dir))
    hub = Hub(settings, run_dispatcher=False, run_bots=False)
    await hub.open()
    await hub.start()
    await asyncio.sleep(120)  # killed long before this
    sys.exit(3)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
