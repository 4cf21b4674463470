"""The fake Bot API, Viber and Twilio servers of tests/fakes in a process of their own, so a
benchmark of the hub doesn't count the fakes' work as the hub's.

    with FakeProviders() as fakes:   # starts the process; fakes.urls["telegram"] …
        stats = await fakes.stats()  # {"telegram": {"sent": n, "chats": k}, …}

`/stats` answers, per provider, how many messages it accepted and to how many distinct
recipients (their difference is what was sent twice).
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections import Counter
from typing import Any

import aiohttp
from aiohttp import web

TELEGRAM_TOKEN = "7123456789:AAHk3xZpQv9mN2bRt5Yw8cLd4Fg6Hj1KsEo"


def _serve(ready: Any, stop: Any) -> None:
    asyncio.run(_main(ready, stop))


async def _main(ready: Any, stop: Any) -> None:
    from tests.fakes.telegram_server import FakeTelegram
    from tests.fakes.twilio_server import FakeTwilio
    from tests.fakes.viber_server import FakeViber

    async with (
        FakeTelegram(max_poll_wait=0.2) as telegram,
        FakeTwilio() as twilio,
        FakeViber(verify=False) as viber,
    ):
        telegram.add_bot(TELEGRAM_TOKEN, "salon_bot")

        async def stats(_: web.Request) -> web.Response:
            recipients = {
                "telegram": Counter(
                    str(c.params["chat_id"]) for c in telegram.calls_of("sendMessage", ok=True)
                ),
                "viber": Counter(str(m.get("receiver")) for m in viber.sent),
                "sms": Counter(str(r.get("To")) for r in twilio.creates()),
            }
            return web.json_response(
                {
                    name: {"sent": sum(seen.values()), "recipients": len(seen)}
                    for name, seen in recipients.items()
                }
            )

        app = web.Application()
        app.router.add_get("/stats", stats)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        ready.put(
            {
                "telegram": telegram.base_url,
                "viber": viber.base_url,
                "sms": twilio.base_url,
                "stats": f"http://{host}:{port}/stats",
            }
        )
        # A multiprocessing event can't be awaited: the parent's stop is checked in a thread.
        await asyncio.to_thread(stop.wait)
        await runner.cleanup()


class FakeProviders:
    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._ready = context.Queue()
        self._stop = context.Event()
        self._process = context.Process(target=_serve, args=(self._ready, self._stop), daemon=True)
        self.urls: dict[str, str] = {}
        self._http: aiohttp.ClientSession | None = None

    def __enter__(self) -> FakeProviders:
        self._process.start()
        self.urls = self._ready.get(timeout=60)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()

    async def stats(self) -> dict[str, dict[str, int]]:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        async with self._http.get(self.urls["stats"]) as response:
            return await response.json()

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
