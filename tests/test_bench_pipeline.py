"""`hub bench pipeline` on a few dozen messages: the harness measures what it says, on both
databases, with the router in the hub's process and in a process of its own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hub.cli.bench import pipeline
from hub.cli.main import main


async def test_the_pipeline_bench_answers_every_client_once(
    db: str, redis_url: str, redis, tmp_path: Path
) -> None:
    del redis  # flushed: the bench starts on an empty Redis db
    opts = pipeline.Options(
        database_url=db,
        redis_url=redis_url,
        messages=60,
        clients=30,
        data_dir=tmp_path,
        routers=1 if "postgresql" in db else 0,
        timeout_s=120,
    )
    figures = await pipeline.run(opts)

    assert figures["stored"] == 60
    assert figures["dead_letters"] == 0
    assert figures["replies_doubled"] == 0
    # Every client's last message is answered; an earlier one may be answered together with it.
    assert 30 <= figures["answered"] <= 60
    assert figures["replies_sent"] >= figures["answered"]
    assert figures["throughput_per_s"] > 0
    latency, overhead = figures["latency_ms"], figures["overhead"]
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"]
    assert overhead["p99"] <= latency["p99"]
    assert figures["memory_mib"]["hub_peak"] > 50
    assert len(figures["memory_mib"]["routers_peak"]) == opts.routers
    ceilings = figures["ceilings"]
    assert ceilings["redis"]["write_read_per_s"] > 0
    assert ceilings["store"]["answered_per_s"] > 0
    text = pipeline.report(figures)
    assert "messages/s end to end" in text and "pipeline / store ceiling" in text


def test_hub_bench_pipeline_from_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    # The embedded defaults: a scratch SQLite file and an embedded Redis of its own.
    code = main(["bench", "pipeline", "--messages", "20", "--model-delay-ms", "20", "--json"])
    assert code == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["stored"] == 20
    assert figures["options"]["brain"] == "model answering after 20 ms"
    # The model's 20 ms are taken out of the hub's overhead.
    assert figures["overhead"]["p50"] < figures["latency_ms"]["p50"]


def test_bad_arguments_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["bench", "pipeline", "--messages", "0"])
    with pytest.raises(SystemExit) as exc:
        main(["bench", "pipeline", "--db", "postgres", "--postgres", ""])
    assert "--postgres" in str(exc.value)
