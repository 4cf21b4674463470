"""`hub bench ingress`: Telegram webhook calls a second into one hub process, and proof that
every update it accepted is in the inbound Redis streams exactly once.

The hub runs in a process of its own (as `hub serve` does: Hub, hub.web.create_app and the
access log, but no router, bots, dispatcher or scheduler: ingress ends when the update is in
Redis). A stand-in Bot API in this process answers the channel's getMe and setWebhook. The
load comes from `wrk` when it is on PATH (a Lua script gives every request its own update and
message id), else from an aiohttp client in a third process. Afterwards the inbound streams
are read back: every 2xx must be there, nothing twice.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing
import os
import random
import resource
import shutil
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from hub.cli.bench import add_database_arguments, admin_url
from hub.cli.bench.databases import fresh_database, label
from hub.cli.bench.stats import cpu_seconds, latency_line_ms, peak_rss_mib, percentile

# A made-up token of the right shape: the bench's Bot API is local.
TOKEN = "7000000001:AAbenchBenchBenchBenchBenchBench01"
SECRET = "bench-webhook-secret"
TARGET_RPS = 3000
CHATS = 1000  # distinct private chats the updates come from
STARTUP_TIMEOUT_S = 60


def add_arguments(parser: argparse.ArgumentParser) -> None:
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--requests", type=int, help="send this many webhook calls")
    size.add_argument("--seconds", type=float, help="send webhook calls for this long (default 10)")
    parser.add_argument("--connections", type=int, default=64, help="concurrent connections")
    add_database_arguments(parser)
    parser.add_argument("--redis", help="Redis URL (default: an embedded server)")
    parser.add_argument(
        "--client",
        choices=["auto", "wrk", "aiohttp"],
        default="auto",
        help="load generator (auto: wrk when on PATH)",
    )
    parser.add_argument("--profile", type=Path, help="cProfile the hub process into this file")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    if args.requests is not None and args.requests < 1:
        print("error: --requests must be at least 1", file=sys.stderr)
        return 2
    if args.connections < 1:
        print("error: --connections must be at least 1", file=sys.stderr)
        return 2
    client = args.client
    if client == "auto":
        client = "wrk" if shutil.which("wrk") else "aiohttp"
    elif client == "wrk" and not shutil.which("wrk"):
        print("error: wrk is not on PATH", file=sys.stderr)
        return 2
    result = asyncio.run(measure(args, client))
    if args.json:
        print(json.dumps(asdict(result), ensure_ascii=False))
    else:
        for line in report(result):
            print(line)
    return 0 if result.lost == 0 and result.twice == 0 else 1


@dataclass
class Result:
    client: str
    connections: int
    db: str
    seconds: float
    sent: int
    answered: int
    ok: int
    non_2xx: int
    socket_errors: int
    requests_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    in_redis: int
    distinct: int
    lost: int
    twice: int
    hub_cpu_percent: float
    redis_cpu_percent: float
    hub_cpu_us_per_request: float
    load_cpu_percent: float
    others_cpu_percent: float
    hub_peak_rss_mib: float
    profile: str | None = None
    statuses: dict[str, int] = field(default_factory=dict)


def report(r: Result) -> list[str]:
    lines = [
        f"ingress: Telegram webhook → Redis, one hub process ({r.db}), "
        f"{r.client} with {r.connections} connections, {r.seconds:.1f} s",
        f"requests/s: {r.requests_per_s:,.0f}",
        latency_line_ms("latency", r.p50_ms, r.p95_ms, r.p99_ms, r.answered),
        f"answered: {r.answered:,} (2xx {r.ok:,}, non-2xx {r.non_2xx:,});"
        f" socket errors: {r.socket_errors}",
        f"in Redis: {r.in_redis:,} entries, {r.distinct:,} distinct updates;"
        f" lost {r.lost}, stored twice {r.twice}"
        + (
            f" ({r.distinct - r.ok:,} more than answered 2xx: in flight when the load stopped)"
            if r.distinct > r.ok
            else ""
        ),
        f"hub process CPU: {r.hub_cpu_percent:.0f}% of one core;"
        f" redis-server: {r.redis_cpu_percent:.0f}%; hub peak RSS {r.hub_peak_rss_mib:.0f} MiB",
        f"hub CPU per request: {r.hub_cpu_us_per_request:.0f} µs (a core's worth:"
        f" {1e6 / max(r.hub_cpu_us_per_request, 1e-9):,.0f} requests/s)",
        f"CPU of the load generator: {r.load_cpu_percent:.0f}%; of other processes on this"
        f" machine: {r.others_cpu_percent:.0f}% ({os.cpu_count()} cores)",
    ]
    if r.non_2xx:
        lines.append("statuses: " + ", ".join(f"{k}: {v}" for k, v in sorted(r.statuses.items())))
    if r.profile:
        lines.append(f"profile of the hub process: {r.profile} (python -m pstats)")
    verdict = "met" if r.requests_per_s >= TARGET_RPS else "NOT met"
    safe = "nothing lost or doubled" if r.lost == r.twice == 0 else "MESSAGES LOST OR DOUBLED"
    lines.append(f"verdict: target ≥ {TARGET_RPS:,} requests/s {verdict}; {safe}")
    return lines


# The run ----------------------------------------------------------------------------------


async def measure(args: argparse.Namespace, client: str) -> Result:
    seconds = args.seconds if args.seconds is not None else (None if args.requests else 10.0)
    inbox = f"bench{random.randrange(16**6):06x}"
    async with fresh_database(admin_url(args)) as database_url:
        return await _measure(args, client, seconds, inbox, database_url)


async def _measure(
    args: argparse.Namespace, client: str, seconds: float | None, inbox: str, database_url: str
) -> Result:
    with tempfile.TemporaryDirectory(prefix="hub-bench-ingress-") as tmp:
        workdir = Path(tmp)
        api = StubBotApi()
        await api.start()
        spec = {
            "settings": {
                "hub_data_dir": str(workdir / "data"),
                "redis_url": args.redis,
                "database_url": database_url,
                "telegram_bot_tokens": f"{inbox}={TOKEN}",
                "telegram_mode": "webhook",
                "telegram_api_url": api.url,
                "telegram_webhook_secret": SECRET,
                "hub_public_url": "https://hub.example",
                "hub_bot": "off",
                "hub_scheduler": False,
            },
            "log": str(workdir / "hub.log"),
            "profile": str(args.profile) if args.profile else None,
        }
        hub = HubProcess(spec)
        try:
            ready = await hub.start()
            await api.wait_registered()
            url = f"http://127.0.0.1:{ready['port']}/webhooks/telegram/{inbox}"
            streams = [f"hub:in:{{{n}}}" for n in range(ready["shards"])]
            start_ids = await _last_ids(ready["redis_url"], streams)
            cpu_before = _cpu(ready)
            load = LoadSpec(
                url=url,
                requests=args.requests,
                seconds=seconds,
                connections=args.connections,
                first_id=random.randrange(1, 10**9) * 1000,
                chat_base=random.randrange(10**8, 10**9),
            )
            if client == "wrk":
                figures = await run_wrk(load, workdir)
            else:
                figures = await run_aiohttp(load)
            cpu = _cpu(ready).percent_since(cpu_before)
            ids = await _stored_ids(ready["redis_url"], streams, start_ids, inbox)
            peak = peak_rss_mib(ready["pid"])
        except BaseException:
            print(_tail(Path(spec["log"])), file=sys.stderr)
            raise
        finally:
            await hub.stop()
            await api.stop()
    elapsed = figures.duration or 1e-9
    distinct = set(ids)
    if figures.ok_ids is not None:
        lost = len(set(figures.ok_ids) - distinct)
    else:  # wrk can't say which calls were answered, only how many
        lost = max(0, figures.ok - len(distinct))
    return Result(
        client=client,
        connections=args.connections,
        db=label(database_url),
        seconds=elapsed,
        sent=figures.sent,
        answered=figures.answered,
        ok=figures.ok,
        non_2xx=figures.answered - figures.ok,
        socket_errors=figures.socket_errors,
        requests_per_s=figures.answered / elapsed,
        p50_ms=figures.p50_ms,
        p95_ms=figures.p95_ms,
        p99_ms=figures.p99_ms,
        in_redis=len(ids),
        distinct=len(distinct),
        lost=lost,
        twice=len(ids) - len(distinct),
        hub_cpu_percent=cpu.hub,
        # Less swayed by other processes than requests/s: what one request costs the hub.
        hub_cpu_us_per_request=cpu.hub * cpu.at / 100 / max(len(ids), 1) * 1e6,
        redis_cpu_percent=cpu.redis,
        load_cpu_percent=cpu.bench,
        others_cpu_percent=max(0.0, cpu.machine - cpu.hub - cpu.redis - cpu.bench),
        hub_peak_rss_mib=peak,
        profile=str(args.profile) if args.profile else None,
        statuses={str(k): v for k, v in figures.statuses.items()},
    )


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-3000:]
    except OSError:
        return ""


@dataclass
class CpuSample:
    """CPU seconds used so far, to tell the hub's share from everything else's."""

    at: float
    hub: float
    redis: float
    bench: float  # this process and the children it reaped (the load generator)
    machine: float  # every process on the machine

    def percent_since(self, before: CpuSample) -> CpuSample:
        wall = max(self.at - before.at, 1e-9)
        return CpuSample(
            at=wall,
            hub=100 * (self.hub - before.hub) / wall,
            redis=100 * (self.redis - before.redis) / wall,
            bench=100 * (self.bench - before.bench) / wall,
            machine=100 * (self.machine - before.machine) / wall,
        )


def _cpu(ready: dict[str, Any]) -> CpuSample:
    redis_pid = ready.get("redis_pid")
    me, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return CpuSample(
        at=time.monotonic(),
        hub=cpu_seconds(ready["pid"]),
        redis=cpu_seconds(redis_pid) if redis_pid else 0.0,
        bench=me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime,
        machine=_machine_busy(),
    )


def _machine_busy() -> float:
    """CPU seconds every core spent busy since boot (/proc/stat); 0.0 without /proc."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            ticks = [int(v) for v in stat.readline().split()[1:9]]
    except (OSError, ValueError):
        return 0.0
    idle = ticks[3] + ticks[4]  # idle, iowait
    return (sum(ticks) - idle) / os.sysconf("SC_CLK_TCK")


# The Bot API the channel registers its webhook with ---------------------------------------


class StubBotApi:
    """Answers getMe and setWebhook (and anything else with `true`) as the Bot API does."""

    def __init__(self) -> None:
        self._runner: web.AppRunner | None = None
        self._registered = asyncio.Event()
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._method)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    async def _method(self, request: web.Request) -> web.Response:
        method = request.match_info["method"].lower()
        result: Any = True
        if method == "getme":
            result = {"id": 7000000001, "is_bot": True, "first_name": "Bench", "username": "bench"}
        if method == "setwebhook":
            self._registered.set()
        return web.json_response({"ok": True, "result": result})

    async def wait_registered(self) -> None:
        await asyncio.wait_for(self._registered.wait(), STARTUP_TIMEOUT_S)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


# The hub's process ------------------------------------------------------------------------


class HubProcess:
    """A hub web server (webhooks in, nothing consumed) in a spawned process."""

    def __init__(self, spec: dict[str, Any]) -> None:
        context = multiprocessing.get_context("spawn")
        self._ready = context.Queue()
        self._stop = context.Event()
        self._process = context.Process(
            target=serve_hub, args=(spec, self._ready, self._stop), daemon=True
        )

    async def start(self) -> dict[str, Any]:
        self._process.start()
        ready = await asyncio.to_thread(self._ready.get, timeout=STARTUP_TIMEOUT_S)
        if "error" in ready:
            raise RuntimeError(f"the hub process failed to start:\n{ready['error']}")
        return ready

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.to_thread(self._process.join, 30)
        if self._process.is_alive():
            self._process.kill()
            await asyncio.to_thread(self._process.join, 5)


def serve_hub(spec: dict[str, Any], ready: Any, stop: Any) -> None:
    try:
        asyncio.run(_serve_hub(spec, ready, stop))
    except BaseException:
        ready.put({"error": traceback.format_exc()})


async def _serve_hub(spec: dict[str, Any], ready: Any, stop: Any) -> None:
    from hub.cli.common import settle_heap
    from hub.state import Hub
    from hub.web.app import AccessLogger, create_app

    _log_like_serve(spec["log"])
    hub = Hub(
        isolated_settings(**spec["settings"]),
        run_router=False,
        run_dispatcher=False,
        run_bots=False,
        run_scheduler=False,
    )
    runner: web.AppRunner | None = None
    profiler = None
    try:
        await hub.open()
        await hub.start()
        runner = web.AppRunner(create_app(hub), handle_signals=False, access_log_class=AccessLogger)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        settle_heap()  # as `hub serve` does once it listens
        if spec["profile"]:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        embedded = hub.embedded
        ready.put(
            {
                "port": runner.addresses[0][1],
                "pid": os.getpid(),
                "redis_pid": embedded.process.pid if embedded and embedded.process else None,
                "redis_url": embedded.url if embedded else spec["settings"]["redis_url"],
                "shards": hub.settings.hub_inbound_shards,
            }
        )
        # A multiprocessing event can't be awaited: the parent's stop is watched in a thread.
        await asyncio.to_thread(stop.wait)
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(spec["profile"])
        await hub.stop()
        if runner is not None:
            await runner.cleanup()
        await hub.close()


def isolated_settings(**values: Any) -> Any:
    """Settings from `values` alone: a developer's environment or .env (real bot tokens,
    other channels' credentials) must not reach a benchmark's hub."""
    from hub.config import Settings

    class Isolated(Settings):
        @classmethod
        def settings_customise_sources(cls, settings_cls, init_settings, **others):  # type: ignore[no-untyped-def, override]
            del settings_cls, others
            return (init_settings,)

    return Isolated(**values)


def _log_like_serve(path: str) -> None:
    # What `hub serve` logs (the access log included), into a file.
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        filename=path,
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    for chatty in ("aiosqlite", "asyncpg", "sqlalchemy.engine"):
        logging.getLogger(chatty).setLevel(logging.WARNING)


# What the load generators send ------------------------------------------------------------


@dataclass
class LoadSpec:
    url: str
    requests: int | None
    seconds: float | None
    connections: int
    first_id: int  # update and message ids count up from here
    chat_base: int  # chats are chat_base … chat_base + CHATS - 1


@dataclass
class Figures:
    sent: int
    answered: int
    ok: int
    socket_errors: int
    duration: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    statuses: dict[int, int]
    ok_ids: list[int] | None  # the message ids answered 2xx, when the client knows them


def update_template() -> str:
    """A private chat's text message as Telegram posts it; __U__ is the update and message
    id, __C__ the chat (and sender) id."""
    user = {
        "id": "__C__",
        "is_bot": False,
        "first_name": "Олена",
        "last_name": "Бенч",
        "username": "client___C__",
        "language_code": "uk",
    }
    update = {
        "update_id": "__U__",
        "message": {
            "message_id": "__U__",
            "from": user,
            "chat": {
                "id": "__C__",
                "first_name": "Олена",
                "last_name": "Бенч",
                "username": "client___C__",
                "type": "private",
            },
            "date": 1767225600,
            "text": "Добрий день! Чи є вільний час на манікюр у суботу після обіду?",
        },
    }
    body = json.dumps(update, ensure_ascii=False, separators=(",", ":"))
    return body.replace('"__U__"', "__U__").replace('"__C__"', "__C__")


def update_body(template: str, n: int, chat: int) -> bytes:
    return template.replace("__U__", str(n)).replace("__C__", str(chat)).encode()


HEADERS = {"Content-Type": "application/json", "X-Telegram-Bot-Api-Secret-Token": SECRET}


# wrk --------------------------------------------------------------------------------------

WRK_SCRIPT = """
local threads = {}
function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end
function init(args)
  sent = 0
  answered = 0
end
local template = [==[%(template)s]==]
local headers = {
  ["Content-Type"] = "application/json",
  ["X-Telegram-Bot-Api-Secret-Token"] = "%(secret)s",
}
function request()
  local n = %(first_id)d + tid * 1000000000 + sent
  sent = sent + 1
  local chat = string.format("%%d", %(chat_base)d + n %% %(chats)d)
  local body = template:gsub("__U__", string.format("%%d", n)):gsub("__C__", chat)
  return wrk.format("POST", nil, headers, body)
end
%(response)s
function done(summary, latency, requests)
  local total = 0
  for _, t in ipairs(threads) do total = total + t:get("sent") end
  local e = summary.errors
  io.write(string.format(
    "BENCH {\\"sent\\": %%d, \\"answered\\": %%d, \\"duration_us\\": %%d, \\"status\\": %%d,"
    .. " \\"connect\\": %%d, \\"read\\": %%d, \\"write\\": %%d, \\"timeout\\": %%d,"
    .. " \\"p50\\": %%d, \\"p95\\": %%d, \\"p99\\": %%d}\\n",
    total, summary.requests, summary.duration, e.status, e.connect, e.read, e.write,
    e.timeout, latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
"""

# With --requests: stop once that many are answered (the calls still on the wire when it
# stops are counted as sent, not answered). A stopped thread does not end wrk, which sleeps
# out its -d: the file written here tells the bench to interrupt it (wrk then reports).
WRK_LIMIT = """
function response(status, headers, body)
  answered = answered + 1
  if answered == %(limit)d then
    wrk.thread:stop()
    local mark = io.open([==[%(mark)s]==], "w")
    mark:close()
  end
end
"""


async def run_wrk(load: LoadSpec, workdir: Path) -> Figures:
    script = workdir / "ingress.lua"
    mark = workdir / "wrk-done"
    limit = WRK_LIMIT % {"limit": load.requests, "mark": mark} if load.requests else ""
    script.write_text(
        WRK_SCRIPT
        % {
            "template": update_template(),
            "secret": SECRET,
            "first_id": load.first_id,
            "chat_base": load.chat_base,
            "chats": CHATS,
            "response": limit,
        },
        encoding="utf-8",
    )
    # One wrk thread keeps up with far more than one hub process answers, and leaves the
    # second core to the hub and Redis.
    seconds = load.seconds if load.seconds is not None else 3600
    proc = await asyncio.create_subprocess_exec(
        "wrk",
        "-t1",
        f"-c{load.connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        load.url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    if load.requests:
        while proc.returncode is None and not await asyncio.to_thread(mark.exists):
            try:
                await asyncio.wait_for(proc.wait(), 0.05)
            except TimeoutError:
                pass
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)  # wrk's "stop now": it joins and reports
    out, err = await proc.communicate()
    text = out.decode(errors="replace")
    line = next((ln for ln in text.splitlines() if ln.startswith("BENCH ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{text}\n{err.decode()}")
    w = json.loads(line[len("BENCH ") :])
    errors = w["connect"] + w["read"] + w["write"] + w["timeout"]
    return Figures(
        sent=w["sent"],
        answered=w["answered"],
        ok=w["answered"] - w["status"],
        socket_errors=errors,
        duration=w["duration_us"] / 1e6,
        p50_ms=w["p50"] / 1000,
        p95_ms=w["p95"] / 1000,
        p99_ms=w["p99"] / 1000,
        statuses={},
        ok_ids=None,
    )


# aiohttp, in a process of its own ---------------------------------------------------------


async def run_aiohttp(load: LoadSpec) -> Figures:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=_aiohttp_load, args=(asdict(load), results), daemon=True)
    process.start()
    try:
        figures = await asyncio.to_thread(results.get)
    finally:
        await asyncio.to_thread(process.join, 30)
    if "error" in figures:
        raise RuntimeError(f"the load generator failed:\n{figures['error']}")
    latencies = figures.pop("latencies")
    return Figures(
        **figures,
        p50_ms=percentile(latencies, 0.5) * 1000,
        p95_ms=percentile(latencies, 0.95) * 1000,
        p99_ms=percentile(latencies, 0.99) * 1000,
    )


def _aiohttp_load(load: dict[str, Any], results: Any) -> None:
    try:
        results.put(asyncio.run(_aiohttp_main(LoadSpec(**load))))
    except BaseException:
        results.put({"error": traceback.format_exc()})


async def _aiohttp_main(load: LoadSpec) -> dict[str, Any]:
    template = update_template()
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    ok_ids: list[int] = []
    counter = {"sent": 0, "errors": 0}
    deadline = time.perf_counter() + load.seconds if load.seconds is not None else None

    def more() -> bool:
        if load.requests is not None:
            return counter["sent"] < load.requests
        return time.perf_counter() < (deadline or 0)

    async def worker(http: aiohttp.ClientSession) -> None:
        while more():
            n = load.first_id + counter["sent"]
            counter["sent"] += 1
            body = update_body(template, n, load.chat_base + n % CHATS)
            began = time.perf_counter()
            try:
                async with http.post(load.url, data=body, headers=HEADERS) as response:
                    await response.read()
                    status = response.status
            except (aiohttp.ClientError, OSError, TimeoutError):
                counter["errors"] += 1
                continue
            latencies.append(time.perf_counter() - began)
            statuses[status] = statuses.get(status, 0) + 1
            if 200 <= status < 300:
                ok_ids.append(n)

    connector = aiohttp.TCPConnector(limit=load.connections)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        began = time.perf_counter()
        await asyncio.gather(*(worker(http) for _ in range(load.connections)))
        duration = time.perf_counter() - began
    return {
        "sent": counter["sent"],
        "answered": len(latencies),
        "ok": len(ok_ids),
        "socket_errors": counter["errors"],
        "duration": duration,
        "statuses": statuses,
        "ok_ids": ok_ids,
        "latencies": latencies,
    }


# Reading the streams back -----------------------------------------------------------------


async def _last_ids(url: str, streams: list[str]) -> dict[str, str]:
    from redis.asyncio import Redis

    async with Redis.from_url(url, decode_responses=True) as redis:
        last = {}
        for stream in streams:
            newest = await redis.xrevrange(stream, count=1)
            last[stream] = newest[0][0] if newest else "0-0"
        return last


async def _stored_ids(url: str, streams: list[str], start: dict[str, str], inbox: str) -> list[int]:
    """The message id of every entry of this run's inbox added after `start` (with repeats)."""
    from redis.asyncio import Redis

    ids: list[int] = []
    async with Redis.from_url(url, decode_responses=True) as redis:
        for stream in streams:
            after = start[stream]
            while rows := await redis.xrange(stream, min=f"({after}", count=10_000):
                for entry_id, fields in rows:
                    msg = json.loads(fields["data"])
                    if msg.get("channel") == "telegram" and msg.get("inbox") == inbox:
                        ids.append(int(msg["provider_message_id"].rsplit(":", 1)[1]))
                    after = entry_id
    return ids


if __name__ == "__main__":
    cli = argparse.ArgumentParser(prog="hub bench ingress", description=__doc__)
    add_arguments(cli)
    sys.exit(run(cli.parse_args()))
