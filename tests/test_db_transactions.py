"""crm_store.db on SQLite: a unit of work takes the write lock when it begins, a read never
takes it (with WAL it reads its snapshot beside the writer), so readers never queue writers."""

from __future__ import annotations

import sqlite3
from contextlib import nullcontext
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from crm_store.db import create_engine, session_factory, transaction


def lock_is_free(path: Path) -> bool:
    """Whether another connection can take the write lock right now (no waiting)."""
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError as exc:
        assert "locked" in str(exc)
        return False
    finally:
        other.close()


async def sql(session: AsyncSession, statement: str) -> object:
    result = await (await session.connection()).execute(text(statement))
    return result.scalar() if result.returns_rows else None


async def test_reads_leave_the_write_lock_free_and_units_of_work_take_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "locks.sqlite3"
    engine = create_engine(f"sqlite:///{path}")
    sessions = session_factory(engine)
    try:
        async with transaction(sessions) as session:
            await sql(session, "CREATE TABLE t (n INTEGER)")
        async with sessions() as reader:
            assert await sql(reader, "SELECT count(*) FROM t") == 0
            assert lock_is_free(path), "an open read holds the write lock"
            async with transaction(sessions) as writer:
                assert not lock_is_free(path), "a unit of work began without the write lock"
                await sql(writer, "INSERT INTO t VALUES (1)")
            # The reader still sees its snapshot; a new read sees the write.
            assert await sql(reader, "SELECT count(*) FROM t") == 0
        async with sessions() as reader:
            assert await sql(reader, "SELECT count(*) FROM t") == 1
    finally:
        await engine.dispose()


@pytest.mark.parametrize("fails", [False, True])
async def test_a_unit_of_work_commits_or_rolls_back_whole(tmp_path: Path, fails: bool) -> None:
    path = tmp_path / "whole.sqlite3"
    engine = create_engine(f"sqlite:///{path}")
    sessions = session_factory(engine)
    try:
        async with transaction(sessions) as session:
            await sql(session, "CREATE TABLE t (n INTEGER)")
        with pytest.raises(RuntimeError) if fails else nullcontext():
            async with transaction(sessions) as session:
                await sql(session, "INSERT INTO t VALUES (1)")
                if fails:
                    raise RuntimeError("the handler failed")
        async with sessions() as reader:
            count = await sql(reader, "SELECT count(*) FROM t")
        assert count == (0 if fails else 1)
        assert lock_is_free(path)
    finally:
        await engine.dispose()
