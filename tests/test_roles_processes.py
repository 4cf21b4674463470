"""`hub serve --role`: the hub split over processes that share one Redis and one database, each
a real `hub serve` subprocess as an operator starts it (docs/pipeline.md "Processes by role")."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from redis.asyncio import Redis
from sqlalchemy import func
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from crm_store.db import transaction
from crm_store.demo import load_demo_salon
from crm_store.models import Message
from crm_store.timeutil import utcnow
from hub.cli.main import main
from hub.pipeline.bus import inbound_stream
from hub.state import ROLES, parse_roles
from tests.support import client_session, eventually, next_frame
from tests.test_serve import free_port

ROOT = Path(__file__).resolve().parent.parent


def role_env(db: str, redis_url: str, data_dir: Path, **more: str) -> dict[str, str]:
    """Every process of one hub: the same Redis, database and shards."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_URL", "DATABASE"))}
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "DATABASE_URL": db,
            "REDIS_URL": redis_url,
            "HUB_DATA_DIR": str(data_dir),
            "HUB_INBOUND_SHARDS": "4",
            "HUB_SHARD_LEASE_MS": "2000",
            "HUB_BOT": "offline",
            "HUB_SCHEDULER": "false",
            "HUB_ARGON2_TIME_COST": "1",
            "HUB_ARGON2_MEMORY_KIB": "64",
            **more,
        }
    )
    return env


@asynccontextmanager
async def role_process(env: dict[str, str], *args: str) -> AsyncIterator[list[str]]:
    """`hub serve ARGS` until it says how to stop it; SIGTERM must end it cleanly."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hub.cli.main", "serve", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        while not lines or "Press Ctrl-C" not in lines[-1]:
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            assert line, f"hub serve {' '.join(args)} exited early:\n" + "".join(lines)
            lines.append(line.decode())
        yield lines
    finally:
        proc.send_signal(signal.SIGTERM)
        rest = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, "".join(lines) + rest[0].decode()


async def inbound_messages(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as session:
        query = select(func.count()).where(Message.direction == "in")
        return int((await session.exec(query)).one())


def test_roles_are_named_in_a_list_and_all_is_every_role() -> None:
    assert parse_roles("router, dispatch") == {"router", "dispatch"}
    assert parse_roles("all") == set(ROLES)
    with pytest.raises(ValueError, match="unknown role routr: choose from web, router"):
        parse_roles("web,routr")


async def test_a_web_process_takes_messages_that_router_and_bot_processes_answer(
    db: str,
    redis_url: str,
    redis: Redis,
    sessions: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> None:
    async with transaction(sessions) as session:
        await load_demo_salon(session, now=utcnow(), history=False)
    env = role_env(db, redis_url, tmp_path / "data")
    web_port, metrics_port = free_port(), free_port()
    async with AsyncExitStack() as running, client_session() as visitor:
        said = await running.enter_async_context(
            role_process(env, "--role", "web", "--port", str(web_port))
        )
        assert any("roles:                        web" in line for line in said)
        base = f"http://127.0.0.1:{web_port}"
        await visitor.get(f"{base}/chat?lang=en")
        ws = await visitor.ws_connect(f"ws://127.0.0.1:{web_port}/ws/chat")
        await next_frame(ws, "ready")
        await ws.send_json({"type": "message", "text": "Hi! Can I book a manicure?"})
        echo = await next_frame(ws)
        assert echo["direction"] == "in"

        # Taken, not stored: no process reads the inbound streams yet (no consumer group).
        streams = [inbound_stream(shard) for shard in range(4)]
        assert sum([await redis.xlen(s) for s in streams]) == 1
        for stream in streams:
            if await redis.exists(stream):
                assert await redis.xinfo_groups(stream) == []
        assert await inbound_messages(sessions) == 0

        # A process without `web` binds no port: the web process's own port is no obstacle.
        said = await running.enter_async_context(
            role_process(env, "--role", "router,dispatch", "--port", str(web_port))
        )
        assert "(no web app here)" in "".join(said)
        await eventually(lambda: inbound_messages(sessions))

        # The bot process has no web app, so its health is on HUB_METRICS_LISTEN alone.
        bot_env = {**env, "HUB_METRICS_LISTEN": f"127.0.0.1:{metrics_port}"}
        await running.enter_async_context(role_process(bot_env, "--role", "bot"))
        answer = await next_frame(ws, timeout=30)
        assert answer["direction"] == "out" and answer["text"]
        async with aiohttp.ClientSession() as probe:
            async with probe.get(f"http://127.0.0.1:{metrics_port}/healthz") as response:
                assert response.status == 200
                assert (await response.json())["ok"] is True
        await ws.close()

    async with sessions() as session:
        replies = (await session.exec(select(Message).where(Message.direction == "out"))).all()
    assert answer["id"] in {m.public_id for m in replies}
    assert {m.status for m in replies} == {"sent"}


def test_bench_pipeline_runs_the_roles_in_processes_of_their_own(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(
        ["bench", "pipeline", "--messages", "20", "--processes", "router=1,bot=1", "--json"]
    )
    assert code == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["stored"] == 20 and figures["replies_doubled"] == 0
    assert figures["options"]["processes"] == "router=1, bot=1"
    assert [p["roles"] for p in figures["memory_mib"]["processes_peak"]] == ["router", "bot"]
    # The bot process's brain times came back: they are taken out of the overhead.
    assert figures["brain_ms"]["p50"] > 0


def test_a_bench_process_runs_router_or_bot_only() -> None:
    with pytest.raises(SystemExit, match="not dispatch"):
        main(["bench", "pipeline", "--processes", "router=1,dispatch=1"])
