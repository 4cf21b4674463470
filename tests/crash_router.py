"""A router process that dies (os._exit) before or after its commit: run by test_pipeline."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from hub.pipeline.router import RouterHooks
from hub.state import Hub
from tests.conftest import test_settings


def die(_msg: object) -> None:
    os._exit(17)


async def main(db: str, redis_url: str, data_dir: str, point: str) -> None:
    hooks = RouterHooks(**{point: die})
    settings = test_settings(db, redis_url, Path(data_dir))
    hub = Hub(settings, router_hooks=hooks, run_dispatcher=False, run_bots=False)
    await hub.open()
    await hub.start()
    await asyncio.sleep(30)  # dies on the first message long before this
    sys.exit(3)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
