"""The migrations build exactly the schema the models describe, and undo what they did."""

from __future__ import annotations

import asyncio

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

import crm_store.models  # noqa: F401
from crm_store.conversations import open_conversation, record_outbound
from crm_store.db import create_engine, transaction
from crm_store.migrate import alembic_config, upgrade_async
from crm_store.models import Client
from crm_store.timeutil import utcnow


async def test_migrated_schema_matches_the_models(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), SQLModel.metadata)
            )
    finally:
        await engine.dispose()
    assert diff == []


async def test_undoing_the_claim_migration_queues_a_message_caught_mid_send_again(
    db: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with transaction(sessions) as session:
        client = Client(name="Iryna")
        session.add(client)
        await session.flush()
        conversation, _ = await open_conversation(
            session,
            client_id=client.id,  # type: ignore[arg-type]
            channel="sms",
            inbox="main",
            chat_id="+380501112233",
            now=utcnow(),
        )
        message = await record_outbound(
            session,
            conversation=conversation,
            text="Hi",
            author="bot",
            outbound_key="k",
            public_id="p",
        )
        message.status, message.claimed_by = "sending", "dispatch-a/1-0"
        message.claimed_until = utcnow()
    engine = create_engine(db)
    try:
        await asyncio.to_thread(command.downgrade, alembic_config(db), "0009")
        async with engine.connect() as conn:
            status = (await conn.execute(text("SELECT status FROM messages"))).scalar_one()
            columns = await conn.run_sync(
                lambda sync: {c["name"] for c in inspect(sync).get_columns("messages")}
            )
        # The code before the claim sends what is `queued`: the message is not stranded.
        assert status == "queued"
        assert not columns & {"claimed_by", "claimed_until"}
    finally:
        await engine.dispose()
        await upgrade_async(db)
