"""Client import speed: a messy 50,000-row CSV export into a fresh database.

    python bench/import_clients.py [--rows 50000] [--database-url postgresql://user@host/db]

SQLite always; PostgreSQL too when --database-url names a server (a database of the
benchmark's own, hub_bench_<hex>, is created there, migrated and dropped afterwards). The file
has what real exports have: phones in every format, the same person on several rows, empty
rows, invalid numbers, email-only clients, dates in three formats, tags. Prints the time to
read and check the file, the time to write, the total and rows per second; then the same for
importing the file again, when every row finds its card (the update path).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import date, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

# Run as a script, Python puts bench/ itself on the path, not the project.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

HEADER = ["ПІБ", "Телефон", "E-mail", "Коментар", "Останній візит", "Теги"]
FIRST = ["Олена", "Марія", "Ірина", "Анна", "Оксана", "Наталія", "Юлія", "Світлана", "Андрій"]
LAST = ["Коваленко", "Бондаренко", "Шевченко", "Ткаченко", "Кравченко", "Мельник", "Бойко"]
NOTES = ["", "", "", "алергія на латекс", "любить каву без цукру", "приходить з дитиною"]
TAGS = ["VIP", "манікюр", "педикюр", "стрижка", "фарбування", "брови", "постійна"]


def phone_text(number: int, rng: random.Random) -> str:
    """One of the ways people write +380 67 xxx xx xx."""
    digits = f"67{number:07d}"
    a, b, c, d = digits[2:5], digits[5:7], digits[7:9], digits[:2]
    return rng.choice(
        [
            f"+380 {d} {a} {b} {c}",
            f"0{d}-{a}-{b}-{c}",
            f"80{d}{a}{b}{c}",
            f"(0{d}){a}{b}{c}",
            f"380{digits}",
            f"+38 (0{d}) {a}-{b}-{c}",
        ]
    )


def visit_text(rng: random.Random) -> str:
    day = date(2022, 1, 1) + timedelta(days=rng.randrange(1_000))
    return rng.choice(
        [
            day.strftime("%d.%m.%Y"),
            day.strftime("%d/%m/%Y") + f" {rng.randrange(9, 20)}:{rng.choice(['00', '30'])}",
            day.isoformat(),
            "",
        ]
    )


def person_row(number: int, rng: random.Random) -> list[str]:
    name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
    roll = rng.random()
    phone = phone_text(number, rng) if roll > 0.05 else ""
    email = f"client{number}@example.com" if roll < 0.35 else ""
    tags = ", ".join(rng.sample(TAGS, rng.randrange(0, 3)))
    return [name, phone, email, rng.choice(NOTES), visit_text(rng), tags]


def messy_rows(count: int, rng: random.Random) -> list[list[str]]:
    rows: list[list[str]] = []
    people = 0
    while len(rows) < count:
        roll = rng.random()
        if roll < 0.01:
            rows.append([""] * len(HEADER))
        elif roll < 0.02:
            rows.append([rng.choice(FIRST), str(rng.randrange(1_000, 99_999)), "", "", "", ""])
        elif roll < 0.08 and people:
            rows.append(person_row(rng.randrange(people), rng))  # the same person again
        else:
            rows.append(person_row(people, rng))
            people += 1
    return rows


def write_csv(path: Path, rows: Sequence[Sequence[str]]) -> None:
    lines = [";".join(HEADER), *(";".join(row) for row in rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8-sig")


async def run(url: str, path: Path) -> tuple[float, float, dict[str, int]]:
    from crm_store.client_import import load_clients_file, run_import
    from crm_store.db import create_engine, session_factory

    started = time.perf_counter()
    plan = load_clients_file(path, region="UA", tz=ZoneInfo("Europe/Kyiv"))
    checked = time.perf_counter()
    engine = create_engine(url)
    try:
        report = await run_import(session_factory(engine), plan)
    finally:
        await engine.dispose()
    written = time.perf_counter()
    counts = {o: report.count(o) for o in ("created", "updated", "rejected", "skipped")}
    return checked - started, written - checked, counts


async def bench(rows: int, database_url: str | None) -> None:
    from hub.cli.bench.databases import fresh_database, label

    with tempfile.TemporaryDirectory(prefix="hub-import-bench-") as tmp:
        path = Path(tmp) / "clients.csv"
        write_csv(path, messy_rows(rows, random.Random(7)))
        print(f"{rows} rows, {path.stat().st_size / 1e6:.1f} MB")
        for admin in (None, database_url) if database_url else (None,):
            async with fresh_database(admin) as url:
                for run_label in ("import", "again"):
                    read_s, write_s, counts = await run(url, path)
                    total = read_s + write_s
                    print(
                        f"{label(url):<10} {run_label:<6} read+check {read_s:6.2f} s  "
                        f"write {write_s:6.2f} s  total {total:6.2f} s  "
                        f"{rows / total:6.0f} rows/s  "
                        + " ".join(f"{k}={v}" for k, v in counts.items())
                    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--database-url", help="a PostgreSQL server to measure as well")
    args = parser.parse_args()
    asyncio.run(bench(args.rows, args.database_url))


if __name__ == "__main__":
    main()
