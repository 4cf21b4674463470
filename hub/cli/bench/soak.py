"""`hub bench soak`: an idle `hub serve`'s resident memory over time.

Starts `hub serve` as a user would on a fresh install (a new data directory in a temporary
one, the embedded Redis and SQLite, no channel credentials: nothing from this environment
or a .env reaches it), waits for /healthz, then samples the resident memory (VmRSS) of the
hub's process and its children every --interval seconds for --minutes minutes; the embedded
redis-server is counted apart. Prints where it started and ended, its peak, and its slope
over the second half (least squares, MiB an hour), against the target: under 200 MB, flat.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp

from hub.cli.bench.stats import child_pids, latency_line, rss_mib

TARGET_MIB = 200e6 / 2**20  # 200 MB
FLAT_MIB_PER_HOUR = 1.0  # growth at or under this over the second half counts as flat
STARTUP_TIMEOUT_S = 120
REDIS_NAME = "redis-server"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--minutes", type=float, default=10.0, help="how long to watch")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--demo", action="store_true", help="serve the demo salon (--demo)")
    parser.add_argument("--healthz", action="store_true", help="also GET /healthz at every sample")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    if args.minutes <= 0 or args.interval <= 0:
        print("error: --minutes and --interval must be positive", file=sys.stderr)
        return 2
    result = asyncio.run(soak(args.minutes, args.interval, demo=args.demo, probe=args.healthz))
    if args.json:
        print(json.dumps(asdict(result), ensure_ascii=False))
    else:
        for line in report(result):
            print(line)
    return 0 if result.healthz_failed == 0 and result.exited is None else 1


@dataclass
class Result:
    minutes: float
    interval_s: float
    demo: bool
    samples: int
    startup_s: float
    hub_start_mib: float
    hub_end_mib: float
    hub_max_mib: float
    hub_slope_mib_per_hour: float
    redis_start_mib: float
    redis_end_mib: float
    redis_max_mib: float
    under_target: bool
    flat: bool
    healthz_ok: int = 0
    healthz_failed: int = 0
    healthz_ms: list[float] = field(default_factory=list)
    exited: int | None = None  # the hub's exit code, when it died during the soak
    # (seconds since the first sample, hub MiB, redis MiB) per sample
    series: list[tuple[float, float, float]] = field(default_factory=list)


def report(r: Result) -> list[str]:
    lines = [
        f"soak: idle `hub serve{' --demo' if r.demo else ''}` (embedded Redis and SQLite),"
        f" {r.samples} samples every {r.interval_s:g} s over {r.minutes:g} min;"
        f" ready in {r.startup_s:.1f} s",
        f"hub resident memory: start {r.hub_start_mib:.1f} MiB, end {r.hub_end_mib:.1f} MiB,"
        f" max {r.hub_max_mib:.1f} MiB",
        f"hub slope over the second half: {r.hub_slope_mib_per_hour:+.2f} MiB/hour",
        f"embedded redis-server: start {r.redis_start_mib:.1f} MiB,"
        f" end {r.redis_end_mib:.1f} MiB, max {r.redis_max_mib:.1f} MiB",
    ]
    if r.healthz_ok or r.healthz_failed:
        lines.append(
            latency_line(f"/healthz: {r.healthz_ok} ok, {r.healthz_failed} failed", r.healthz_ms)
        )
    if r.exited is not None:
        lines.append(f"the hub EXITED during the soak (code {r.exited})")
    size = "under" if r.under_target else "OVER"
    shape = "flat" if r.flat else "NOT flat"
    lines.append(
        f"verdict: idle resident {size} 200 MB ({TARGET_MIB:.1f} MiB) at its peak;"
        f" {shape} (|slope| ≤ {FLAT_MIB_PER_HOUR:g} MiB/hour)"
    )
    return lines


async def soak(minutes: float, interval: float, *, demo: bool, probe: bool) -> Result:
    with tempfile.TemporaryDirectory(prefix="hub-bench-soak-") as tmp:
        workdir = Path(tmp)
        port = _free_port()
        log_path = workdir / "serve.log"
        began = time.monotonic()
        with log_path.open("wb") as log:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "hub.cli.main",
                "serve",
                "--port",
                str(port),
                *(["--demo"] if demo else []),
                cwd=workdir,  # no .env of the caller's
                env=_fresh_env(workdir / "data"),
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )
        base = f"http://127.0.0.1:{port}"
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
                await _wait_healthy(http, base, process, log_path)
                startup = time.monotonic() - began
                result = await _watch(http, base, process, minutes, interval, probe=probe)
        except BaseException:
            print(_tail(log_path), file=sys.stderr)
            raise
        finally:
            await _stop(process)
    result.startup_s = startup
    result.demo = demo
    return result


def _fresh_env(data_dir: Path) -> dict[str, str]:
    """This environment without any hub setting (REDIS_URL, DATABASE_URL, channel
    credentials, OPENAI_API_KEY, …): the soak measures a fresh install."""
    from hub.config import Settings

    names = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k.upper() not in names}
    env["HUB_DATA_DIR"] = str(data_dir)
    # The hub's own source tree first, whether or not it is installed.
    root = str(Path(__file__).resolve().parents[3])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


async def _wait_healthy(
    http: aiohttp.ClientSession, base: str, process: asyncio.subprocess.Process, log: Path
) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.returncode is not None:
            raise RuntimeError(f"hub serve exited ({process.returncode}):\n{_tail(log)}")
        try:
            async with http.get(f"{base}/healthz") as response:
                if response.status == 200:
                    return
        except (aiohttp.ClientError, OSError, TimeoutError):
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError(f"hub serve did not answer /healthz in {STARTUP_TIMEOUT_S} s")


async def _watch(
    http: aiohttp.ClientSession,
    base: str,
    process: asyncio.subprocess.Process,
    minutes: float,
    interval: float,
    *,
    probe: bool,
) -> Result:
    series: list[tuple[float, float, float]] = []
    healthz_ms: list[float] = []
    failed = 0
    exited = None
    start = time.monotonic()
    end = start + minutes * 60
    n = 0
    while True:
        if process.returncode is not None:
            exited = process.returncode
            break
        hub, redis = memory(process.pid)
        series.append((time.monotonic() - start, hub, redis))
        if probe:
            began = time.perf_counter()
            try:
                async with http.get(f"{base}/healthz") as response:
                    await response.read()
                    ok = response.status == 200
            except (aiohttp.ClientError, OSError, TimeoutError):
                ok = False
            if ok:
                healthz_ms.append(time.perf_counter() - began)
            else:
                failed += 1
        n += 1
        due = start + n * interval  # a fixed grid: a slow probe doesn't stretch the run
        if due > end:
            break
        await asyncio.sleep(max(0.0, due - time.monotonic()))
    hubs = [h for _, h, _ in series]
    rediss = [r for _, _, r in series]
    half = series[len(series) // 2 :]
    slope = slope_per_hour([t for t, _, _ in half], [h for _, h, _ in half])
    return Result(
        minutes=minutes,
        interval_s=interval,
        demo=False,
        samples=len(series),
        startup_s=0.0,
        hub_start_mib=hubs[0],
        hub_end_mib=hubs[-1],
        hub_max_mib=max(hubs),
        hub_slope_mib_per_hour=slope,
        redis_start_mib=rediss[0],
        redis_end_mib=rediss[-1],
        redis_max_mib=max(rediss),
        under_target=max(hubs) < TARGET_MIB,
        flat=abs(slope) <= FLAT_MIB_PER_HOUR,
        healthz_ok=len(healthz_ms),
        healthz_failed=failed,
        healthz_ms=healthz_ms,
        exited=exited,
        series=[(round(t, 2), round(h, 2), round(r, 2)) for t, h, r in series],
    )


def memory(pid: int) -> tuple[float, float]:
    """(the hub: its process and children but Redis, the embedded redis-server), in MiB."""
    hub, redis = rss_mib(pid), 0.0
    for child in child_pids(pid):
        if _name(child) == REDIS_NAME:
            redis += rss_mib(child)
        else:
            hub += rss_mib(child)
    return hub, redis


def _name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as comm:
            return comm.read().strip()
    except OSError:
        return ""


def slope_per_hour(seconds: list[float], values: list[float]) -> float:
    """The least-squares slope of values over time, per hour; 0.0 for fewer than 2 points."""
    if len(seconds) < 2:
        return 0.0
    mean_t = sum(seconds) / len(seconds)
    mean_v = sum(values) / len(values)
    spread = sum((t - mean_t) ** 2 for t in seconds)
    if spread == 0:
        return 0.0
    covariance = sum((t - mean_t) * (v - mean_v) for t, v in zip(seconds, values, strict=True))
    return covariance / spread * 3600


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), 30)
    except TimeoutError:
        process.kill()
        await process.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-3000:]
    except OSError:
        return ""


if __name__ == "__main__":
    cli = argparse.ArgumentParser(prog="hub bench soak", description=__doc__)
    add_arguments(cli)
    sys.exit(run(cli.parse_args()))
