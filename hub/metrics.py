"""Prometheus metrics. Counters live in this process; stream gauges are read at scrape time."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)

MESSAGES_IN = Counter(
    "hub_messages_in_total", "Inbound messages stored", ["channel"], registry=REGISTRY
)
DUPLICATES_IN = Counter(
    "hub_messages_duplicate_total",
    "Inbound copies recognised as already stored",
    ["channel"],
    registry=REGISTRY,
)
MESSAGES_OUT = Counter(
    "hub_messages_out_total",
    "Outbound messages by final delivery state",
    ["channel", "status"],
    registry=REGISTRY,
)
PIPELINE_LATENCY = Histogram(
    "hub_pipeline_latency_seconds",
    "From the channel receiving a message to its database commit",
    ["channel"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
STREAM_LAG = Gauge(
    "hub_stream_lag",
    "Entries not yet acknowledged (pending plus unread)",
    ["stream", "group"],
    registry=REGISTRY,
)
BOT_TURN_SECONDS = Histogram(
    "hub_bot_turn_seconds",
    "The AI administrator's time to answer one client message (the model's time included)",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
HANDOFFS = Counter(
    "hub_bot_handoffs_total", "Conversations the bot handed to staff", registry=REGISTRY
)
DEAD_LETTERS = Gauge("hub_dead_letters", "Entries in the dead-letter stream", registry=REGISTRY)


def render() -> bytes:
    return generate_latest(REGISTRY)


SCHEDULED = Counter(
    "hub_scheduled_messages_total",
    "Reminders, re-engagement messages and broadcasts handled by the scheduler, by outcome",
    ["channel", "outcome"],
    registry=REGISTRY,
)
