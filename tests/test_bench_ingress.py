"""`hub bench ingress` and `hub bench soak`, run tiny: the harnesses start their hub, drive
it and print figures that add up (every accepted update in Redis once, memory sampled)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
from typing import Any

import pytest

from hub.cli.bench import ingress, soak


def parse(module: Any, *argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return parser.parse_args(list(argv))


async def test_ingress_with_a_set_number_of_requests(
    redis: Any, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = parse(
        ingress,
        *("--requests", "300", "--connections", "8", "--client", "aiohttp"),
        *("--redis", redis_url, "--json"),
    )
    code = await asyncio.to_thread(ingress.run, args)

    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0
    assert out["sent"] == out["answered"] == out["ok"] == 300
    assert out["non_2xx"] == out["socket_errors"] == 0
    assert out["in_redis"] == out["distinct"] == 300
    assert out["lost"] == out["twice"] == 0
    assert out["requests_per_s"] > 0 and out["hub_cpu_us_per_request"] > 0
    assert 0 < out["p50_ms"] <= out["p95_ms"] <= out["p99_ms"]
    assert out["hub_peak_rss_mib"] > 20
    # Seen from outside the bench: 300 entries on the inbound streams of that Redis.
    streams = [key async for key in redis.scan_iter("hub:in:*") if not key.endswith(":lease")]
    assert sum([await redis.xlen(s) for s in streams]) == 300


async def test_ingress_for_a_few_seconds(capsys: pytest.CaptureFixture[str]) -> None:
    # wrk when it is installed, else the aiohttp client; the embedded Redis; PostgreSQL when
    # the suite has one (a scratch database, dropped afterwards).
    admin = os.environ.get("HUB_TEST_DATABASE_URL")
    db = ("--db", "postgres", "--postgres", admin) if admin else ("--db", "sqlite")
    args = parse(ingress, "--seconds", "2", "--connections", "16", *db)
    code = await asyncio.to_thread(ingress.run, args)

    out = capsys.readouterr().out
    assert code == 0, out
    rate = re.search(r"^requests/s: ([\d,]+)$", out, re.M)
    assert rate and int(rate.group(1).replace(",", "")) > 0, out
    answered = re.search(r"^answered: ([\d,]+) \(2xx ([\d,]+), non-2xx 0\)", out, re.M)
    stored = re.search(r"^in Redis: ([\d,]+) entries, ([\d,]+) distinct updates;", out, re.M)
    assert answered and stored, out
    ok, entries, distinct = (
        int(answered.group(2).replace(",", "")),
        int(stored.group(1).replace(",", "")),
        int(stored.group(2).replace(",", "")),
    )
    assert entries == distinct >= ok > 0
    assert "lost 0, stored twice 0" in out
    assert "postgresql" in out if admin else "sqlite" in out
    assert re.search(r"^latency: p50 [\d.]+ ms · p95 [\d.]+ ms · p99 [\d.]+ ms", out, re.M)


async def test_soak_samples_an_idle_hub(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse(soak, "--minutes", "0.1", "--interval", "1", "--healthz", "--json")
    code = await asyncio.to_thread(soak.run, args)

    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0
    assert out["exited"] is None
    assert out["samples"] == len(out["series"]) >= 6
    assert out["healthz_ok"] == out["samples"] and out["healthz_failed"] == 0
    hub = [h for _, h, _ in out["series"]]
    redis = [r for _, _, r in out["series"]]
    assert min(hub) > 20 and all(r > 0 for r in redis)
    near = {"abs": 0.01}  # the series is rounded to hundredths
    assert out["hub_max_mib"] == pytest.approx(max(hub), **near)
    assert out["redis_max_mib"] == pytest.approx(max(redis), **near)
    assert out["hub_start_mib"] == pytest.approx(hub[0], **near)
    assert out["hub_end_mib"] == pytest.approx(hub[-1], **near)
    # The target itself: a fresh install idles under 200 MB (aiogram alone is over 100 MiB,
    # so a channel module imported without its settings would show here).
    assert out["under_target"] is True, out["hub_max_mib"]


def test_slope_is_the_least_squares_one() -> None:
    assert soak.slope_per_hour([0, 1800, 3600], [100, 101, 102]) == pytest.approx(2.0)
    assert soak.slope_per_hour([0, 60, 120, 180], [50, 50, 50, 50]) == 0.0
    assert soak.slope_per_hour([5.0], [1.0]) == 0.0
