"""`hub serve` as a user runs it: embedded Redis and SQLite, what the first start says, the
demo login, a taken port, clean shutdown."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from hub.cli.common import CliError
from hub.cli.serve import listen

ROOT = Path(__file__).resolve().parent.parent
FIRST_START_STEPS = (
    "starting the embedded Redis in ",
    "creating the database ",
    "loading the demo salon: ",
    "demo salon: 14 services, 4 masters, ",
    "The hub is running at ",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hub_env(data_dir: Path, **settings: str) -> dict[str, str]:
    """This environment on the embedded defaults (no REDIS_URL, no DATABASE_URL)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_URL", "DATABASE"))}
    env.update({"HUB_DATA_DIR": str(data_dir), "PYTHONPATH": str(ROOT), **settings})
    return env


@asynccontextmanager
async def serving(cwd: Path, port: int) -> AsyncIterator[list[str]]:
    """`hub serve --demo` until it says how to stop it, with its output so far (stderr and
    stdout in the order written); stopped with SIGTERM, which must end it cleanly."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hub.cli.main", "serve", "--demo", "--port", str(port),
        cwd=cwd, env=hub_env(cwd / "data"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        while not lines or "Press Ctrl-C" not in lines[-1]:
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            assert line, "hub serve exited early:\n" + "".join(lines)
            lines.append(line.decode())
        yield lines
    finally:
        proc.send_signal(signal.SIGTERM)
        rest = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, "".join(lines) + rest[0].decode()


def steps_said(lines: list[str]) -> list[str]:
    return [step for line in lines for step in FIRST_START_STEPS if line.startswith(step)]


def processes_using(path: Path) -> list[str]:
    """Command lines of this machine's processes that name `path` (the embedded Redis names
    its socket)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # gone meanwhile
        if str(path) in text:
            found.append(text)
    return found


async def test_serve_demo_on_embedded_defaults_and_stop_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    async with serving(tmp_path, port) as lines:
        output = "".join(lines)
        # The first start says each slow step as it begins, then where to go.
        assert steps_said(lines) == list(FIRST_START_STEPS), output
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
    assert not socket_path.exists()  # the embedded Redis was stopped with the hub
    assert not processes_using(socket_path)
    assert (tmp_path / "data" / "hub.sqlite3").exists()

    # A restart says only what it does again: Redis starts, nothing is created or loaded.
    async with serving(tmp_path, port) as lines:
        assert steps_said(lines) == [
            "starting the embedded Redis in ",
            "The hub is running at ",
        ], "".join(lines)


async def test_a_taken_port_fails_at_once_in_one_line(tmp_path: Path) -> None:
    """Before the database, the demo salon and the channels: nothing is made, one line said."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hub.cli.main", "serve", "--demo", "--port", str(port),
            cwd=tmp_path, env=hub_env(tmp_path / "data"),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    assert out == b""
    assert err.decode().splitlines() == [
        f"error: can't listen on 127.0.0.1:{port}: Address already in use "
        "(another hub running? choose another with --port)"
    ]
    assert not (tmp_path / "data").exists()
    assert not processes_using(tmp_path)


async def test_a_taken_metrics_address_names_its_setting(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hub.cli.main", "serve", "--port", str(free_port()),
            cwd=tmp_path, env=hub_env(tmp_path / "data", HUB_METRICS_LISTEN=f"127.0.0.1:{port}"),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    assert err.decode().splitlines() == [
        f"error: can't listen on 127.0.0.1:{port}: Address already in use "
        "(another hub running? choose another with HUB_METRICS_LISTEN)"
    ]
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", ""], ids=["ipv4", "name", "all"])
def test_the_address_is_held_from_the_first_moment(host: str) -> None:
    """The sockets serve will use are listening already: a second hub can't take the port
    while the first is still loading."""
    with listen(host, 0, change="--port") as first:
        ports = {sock.getsockname()[1] for sock in first.sockets}
        assert ports == {first.port}  # one port for every family the host has
        with pytest.raises(CliError, match=r"Address already in use .*--port"):
            listen(host, first.port, change="--port")
        with socket.create_connection(("127.0.0.1", first.port), timeout=5):
            pass  # waits in the backlog until the hub serves


def test_an_ipv6_address_is_written_with_brackets() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    try:
        first = listen("::1", 0, change="--port")
    except CliError:
        pytest.skip("no IPv6 loopback here")
    with first:
        assert first.url == f"http://[::1]:{first.port}"
        with pytest.raises(CliError, match=rf"can't listen on \[::1\]:{first.port}: "):
            listen("::1", first.port, change="--port")


def test_a_host_that_does_not_resolve_is_one_line() -> None:
    with pytest.raises(CliError, match=r"can't listen on nowhere\.invalid:8080: "):
        listen("nowhere.invalid", 8080, change="--port")
