"""A worker process of its own for `hub bench pipeline --processes router=N,bot=M` (and the
older `--routers N`): the router, the bot worker or both, as `hub serve --role` runs them but
without its web app or channels. Settings from the environment, "ready" on stdout once
started, a clean stop on SIGTERM. A bot process writes the time its brain took over each
message to --brain-times when it stops, so the bench can take it out of the hub's overhead."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from pathlib import Path

from hub.brains import build_responder
from hub.cli.bench.traffic import DelayedModel, TimedResponder
from hub.config import Settings
from hub.state import Hub, parse_roles

# What a bench process may run: the dispatcher stays in the bench's own process, where the
# sink channel times each delivery, and the bench runs no scheduler.
BENCH_ROLES = frozenset({"router", "bot"})


def bench_roles(text: str) -> frozenset[str]:
    """`router`, `bot` or `router+bot`: the roles of one bench process."""
    roles = parse_roles(text.replace("+", ","))
    if not roles <= BENCH_ROLES:
        raise ValueError(
            f"a bench process runs router and/or bot, not {', '.join(sorted(roles - BENCH_ROLES))}"
            " (the bench's own process dispatches)"
        )
    return roles


async def main(roles: frozenset[str], model_delay_ms: int | None) -> dict[str, float]:
    """Run until SIGTERM; the brain's seconds by message id (none without `bot`)."""
    settings = Settings()
    hub = Hub(settings, roles=roles)
    await hub.open()
    timed: TimedResponder | None = None
    if "bot" in roles:
        inner = (
            build_responder(settings, hub.sessions, hub.clock)
            if model_delay_ms is None
            else DelayedModel(model_delay_ms / 1000)
        )
        hub.responder = timed = TimedResponder(inner)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await hub.start()
        print("ready", flush=True)
        await stop.wait()
    finally:
        await hub.stop()
        await hub.close()
    return timed.seconds if timed is not None else {}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m hub.cli.bench.router_process")
    parser.add_argument("roles", type=bench_roles, nargs="?", default=frozenset({"router"}))
    parser.add_argument("--model-delay-ms", type=int)
    parser.add_argument("--brain-times", type=Path)
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse()
    seconds = asyncio.run(main(args.roles, args.model_delay_ms))
    if args.brain_times is not None:
        args.brain_times.write_text(json.dumps(seconds))
