"""`hub serve` as a user runs it: embedded Redis and SQLite, the demo login, clean shutdown."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_serve_demo_on_embedded_defaults_and_stop_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_URL", "DATABASE_URL"))}
    env.update({"HUB_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(ROOT)})
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hub.cli.main",
        "serve",
        "--demo",
        "--port",
        str(port),
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    output = ""
    try:
        while "Press Ctrl-C" not in output:
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            assert line, f"hub serve exited early:\n{output}"
            output += line.decode()
        assert f"http://127.0.0.1:{port}/chat" in output
        assert f"http://127.0.0.1:{port}/inbox" in output
        # The log holds no SQL, and so no password hash or saved session.
        assert "INSERT INTO" not in output and "argon2" not in output, output
        # The scheduler ticks every 2 s; its clock must not write a line each time.
        assert "Running job" not in output and "executed successfully" not in output, output
        login = re.search(r"demo owner login:\s+(\S+) / (\S+)", output)
        assert login, output
        socket_path = tmp_path / "data" / "redis.sock"
        assert socket_path.exists()
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as http:
            async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                assert (await response.json())["ok"] is True
            async with http.post(
                f"http://127.0.0.1:{port}/api/auth/login",
                json={"email": login.group(1), "password": login.group(2)},
            ) as response:
                assert response.status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        rest = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, output + rest[0].decode()
    assert not socket_path.exists()  # the embedded Redis was stopped with the hub
    assert (tmp_path / "data" / "hub.sqlite3").exists()


async def test_a_taken_port_fails_at_once_in_one_line(tmp_path: Path) -> None:
    """Before the database, the demo salon and the channels: nothing is made, one line said."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_URL", "DATABASE"))}
        env.update({"HUB_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(ROOT)})
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hub.cli.main", "serve", "--demo", "--port", str(port),
            cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    assert out == b""
    assert err.decode().splitlines() == [
        f"error: can't listen on 127.0.0.1:{port}: Address already in use "
        "(another hub running? choose another with --port)"
    ]
    assert not (tmp_path / "data").exists()
