"""Signing in and staying signed in, as an attacker and an operator try it (docs/security.md):
throttling with backoff per account and per client address, known devices that always get in
with the right password, client addresses behind a trusted proxy, `Secure` cookies behind TLS,
deactivation that ends every session at once, and a guarded /metrics."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr
from sqlmodel import select

from channels.webchat import COOKIE as WEBCHAT_COOKIE
from crm_store.db import transaction
from crm_store.models import AuditEntry, Staff
from crm_store.staff import add_staff
from hub.cli.main import main as hub_cli
from hub.config import Settings, parse_networks
from hub.forwarded import client_of
from hub.web.login_throttle import FREE_PER_ACCOUNT, FREE_PER_ADDRESS, FREE_PER_DEVICE
from tests.support import RunningHub, client_session, start_hub

OWNER = ("owner@salon.test", "owner-pass-1")
MASTER = ("olena@salon.test", "olena-pass-1")


async def team(running: RunningHub) -> dict[str, int]:
    async with transaction(running.hub.sessions) as session:
        owner = await add_staff(session, email=OWNER[0], password=OWNER[1], role="owner")
        master = await add_staff(session, email=MASTER[0], password=MASTER[1], role="master")
    return {"owner": owner.id, "master": master.id}  # type: ignore[dict-item]


async def sign_in(
    http: aiohttp.ClientSession, running: RunningHub, email: str, password: str, **headers: str
) -> tuple[int, dict[str, Any]]:
    async with http.post(
        f"{running.base_url}/api/auth/login",
        json={"email": email, "password": password},
        headers=headers,
    ) as response:
        body = await response.json()
        if response.status == 200:
            http.headers["X-CSRF-Token"] = body["csrf_token"]
        return response.status, {**body, "retry_after": response.headers.get("Retry-After")}


def stranger() -> str:
    return f"{secrets.token_hex(4)}@made-up.example"


# Throttling --------------------------------------------------------------------------------


async def test_made_up_emails_from_one_address_slow_it_down_but_lock_no_one_out(
    hub: RunningHub,
) -> None:
    """The probe's attack: 20+ wrong logins with made-up emails from one address (behind a
    proxy, that is everyone). The address is slowed down; a staff member on a device where
    they signed in before still gets in at once with the right password."""
    await team(hub)
    async with client_session() as owners_laptop, client_session() as attacker:
        assert (await sign_in(owners_laptop, hub, *OWNER))[0] == 200  # a known device from now
        statuses = [(await sign_in(attacker, hub, stranger(), "guess"))[0] for _ in range(25)]
        assert statuses[:FREE_PER_ADDRESS] == [401] * FREE_PER_ADDRESS
        assert set(statuses[FREE_PER_ADDRESS:]) == {429}
        # A new browser at the same address waits like the attacker (it is the same address)...
        async with client_session() as new_browser:
            status, body = await sign_in(new_browser, hub, *MASTER)
            assert status == 429 and int(body["retry_after"]) >= 1
        # ...but the owner's own laptop gets in, at once.
        assert (await sign_in(owners_laptop, hub, *OWNER))[0] == 200


async def test_guessing_the_owners_password_backs_off_and_the_owner_still_gets_in(
    hub: RunningHub,
) -> None:
    await team(hub)
    async with client_session() as owners_phone, client_session() as attacker:
        assert (await sign_in(owners_phone, hub, *OWNER))[0] == 200
        for _ in range(FREE_PER_ACCOUNT):
            assert (await sign_in(attacker, hub, OWNER[0], "guess"))[0] == 401
        # Past the allowance every attempt waits, the wait doubling: a backoff, not a lock.
        waits = []
        for _ in range(3):
            status, body = await sign_in(attacker, hub, OWNER[0], "guess")
            assert status == 429
            waits.append(int(body["retry_after"]))
            await _time_passes(hub, "account")
            assert (await sign_in(attacker, hub, OWNER[0], "guess"))[0] == 401
        assert waits == [1, 2, 4]
        # A refused attempt never reaches the password check: the right one is refused too.
        assert (await sign_in(attacker, hub, *OWNER))[0] == 429
        # The owner, on a device they signed in on before, is not kept out.
        assert (await sign_in(owners_phone, hub, *OWNER))[0] == 200
    # And a success forgets the account's failures: a typo later starts from zero.
    async with client_session() as elsewhere:
        assert (await sign_in(elsewhere, hub, OWNER[0], "typo"))[0] == 401


async def test_a_burst_of_parallel_guesses_gets_no_more_tries(hub: RunningHub) -> None:
    await team(hub)
    async with client_session() as attacker:
        tries = [sign_in(attacker, hub, OWNER[0], f"guess-{n}") for n in range(30)]
        statuses = [status for status, _ in await asyncio.gather(*tries)]
    assert statuses.count(401) == FREE_PER_ACCOUNT
    assert statuses.count(429) == 30 - FREE_PER_ACCOUNT


async def test_a_known_device_has_an_allowance_of_its_own(hub: RunningHub) -> None:
    """A stolen device cookie is no skeleton key: past its allowance the device is known no
    more and its attempts are throttled like anyone's."""
    await team(hub)
    async with client_session() as shared_pc:
        assert (await sign_in(shared_pc, hub, *OWNER))[0] == 200
        for _ in range(FREE_PER_DEVICE):
            assert (await sign_in(shared_pc, hub, OWNER[0], "guess"))[0] == 401
        statuses = [(await sign_in(shared_pc, hub, OWNER[0], "guess"))[0] for _ in range(8)]
    assert statuses.count(401) <= FREE_PER_ACCOUNT and 429 in statuses


async def _time_passes(running: RunningHub, kind: str) -> None:
    """The current wait of a throttle ends (Redis keeps it on its own clock)."""
    gates = [k async for k in running.hub.redis.scan_iter(f"hub:{{login}}:{kind}:*:gate")]
    assert gates
    await running.hub.redis.delete(*gates)


# Behind a proxy ------------------------------------------------------------------------------


def test_the_client_address_is_read_only_through_trusted_proxies() -> None:
    proxies = parse_networks("10.0.0.0/8, ::1")
    spoofed = "1.2.3.4, 5.6.7.8"
    # Not through a trusted proxy: whatever the header says, the peer is the client.
    assert client_of("203.0.113.9", spoofed, proxies) == "203.0.113.9"
    assert client_of("203.0.113.9", spoofed, ()) == "203.0.113.9"
    # Through one: the rightmost address that is not a trusted proxy, never what the client
    # wrote to the left of it.
    assert client_of("10.0.0.2", f"{spoofed}, 198.51.100.7", proxies) == "198.51.100.7"
    assert client_of("10.0.0.2", "198.51.100.7, 10.0.0.9", proxies) == "198.51.100.7"
    assert client_of("::1", "198.51.100.7", proxies) == "198.51.100.7"
    assert client_of("10.0.0.2", "[2001:db8::1]:4711", proxies) == "2001:db8::1"
    assert client_of("10.0.0.2", "", proxies) == "10.0.0.2"
    assert client_of("10.0.0.2", "not-an-address, 198.51.100.7", proxies) == "198.51.100.7"
    assert client_of("10.0.0.2", "10.0.0.3, not-an-address", proxies) == "10.0.0.2"
    assert client_of("::ffff:203.0.113.9", "", proxies) == "203.0.113.9"
    with pytest.raises(ValueError, match=r"not an IP address or network: 'proxy\.lan'"):
        parse_networks("10.0.0.1, proxy.lan")


async def test_behind_a_trusted_proxy_each_client_is_throttled_apart(
    settings: Settings, redis: Any
) -> None:
    del redis
    running = await start_hub(settings.model_copy(update={"hub_trusted_proxies": "127.0.0.1"}))
    try:
        await team(running)
        async with client_session() as attacker, client_session() as colleague:
            for _ in range(FREE_PER_ADDRESS + 2):
                # Rotating what it writes to the left changes nothing: the proxy's own entry
                # (the rightmost) is what counts.
                spoof = f"{secrets.randbelow(250)}.1.1.1, 203.0.113.66"
                await sign_in(attacker, running, stranger(), "x", **{"X-Forwarded-For": spoof})
            blocked = await sign_in(
                attacker, running, *MASTER, **{"X-Forwarded-For": "203.0.113.66"}
            )
            assert blocked[0] == 429
            status, _ = await sign_in(
                colleague, running, *MASTER, **{"X-Forwarded-For": "198.51.100.20"}
            )
            assert status == 200
    finally:
        await running.stop()


async def test_without_trusted_proxies_a_forwarded_header_moves_no_one(hub: RunningHub) -> None:
    await team(hub)
    async with client_session() as attacker:
        statuses = []
        for n in range(FREE_PER_ADDRESS + 2):
            fake = {"X-Forwarded-For": f"198.51.100.{n}"}
            statuses.append((await sign_in(attacker, hub, stranger(), "x", **fake))[0])
    assert statuses[-1] == 429


@pytest.mark.parametrize(
    ("public_url", "headers", "secure"),
    [
        (None, {}, False),
        ("https://salon.example", {}, True),
        # A TLS proxy in front says so; a lie would only make the liar's own cookie stricter.
        (None, {"X-Forwarded-Proto": "https"}, True),
        ("http://salon.example", {"X-Forwarded-Proto": "https, http"}, True),
        (None, {"X-Forwarded-Proto": "http"}, False),
    ],
)
async def test_cookies_are_secure_behind_tls(
    settings: Settings, redis: Any, public_url: str | None, headers: dict[str, str], secure: bool
) -> None:
    del redis
    running = await start_hub(settings.model_copy(update={"hub_public_url": public_url}))
    try:
        await team(running)
        async with client_session() as http:
            async with http.post(
                f"{running.base_url}/api/auth/login",
                json={"email": OWNER[0], "password": OWNER[1]},
                headers=headers,
            ) as response:
                assert response.status == 200
                cookies = response.cookies
            # The web chat's visitor cookie too.
            async with http.get(f"{running.base_url}/chat", headers=headers) as response:
                assert response.status == 200
                visitor = response.cookies[WEBCHAT_COOKIE]
        assert bool(visitor["secure"]) is secure
        for name in ("hub_session", "hub_csrf", "hub_device"):
            assert bool(cookies[name]["secure"]) is secure, name
            assert cookies[name]["samesite"] == "Strict"
        assert cookies["hub_session"]["httponly"] and cookies["hub_device"]["httponly"]
        assert cookies["hub_device"]["path"] == "/api/auth"
    finally:
        await running.stop()


# Deactivation ----------------------------------------------------------------------------------

HARMLESS_READS = ("/api/me", "/api/canned", "/api/services", "/api/masters", "/api/business",
                  "/api/openapi.json", "/api/staff", "/api/conversations")  # fmt: skip


async def test_deactivation_ends_every_session_at_once(hub: RunningHub) -> None:
    ids = await team(hub)
    api = f"{hub.base_url}/api"
    async with (
        client_session() as owner,
        client_session() as laptop,
        client_session() as phone,
    ):
        assert (await sign_in(owner, hub, *OWNER))[0] == 200
        for device in (laptop, phone):
            assert (await sign_in(device, hub, *MASTER))[0] == 200
        for path in HARMLESS_READS:
            async with laptop.get(hub.base_url + path) as response:
                assert response.status == 200, path
        async with phone.get(f"{api}/events", timeout=aiohttp.ClientTimeout(total=20)) as live:
            assert await live.content.readline() == b": ready\n"
            async with owner.post(f"{api}/staff/{ids['master']}/deactivate") as response:
                assert response.status == 200 and (await response.json())["active"] is False
            # The open live stream ends too, not at its next ping.
            assert await asyncio.wait_for(live.content.read(), 5) == b"\n"
        for device in (laptop, phone):
            for path in HARMLESS_READS:
                async with device.get(hub.base_url + path) as response:
                    assert response.status == 401, path
            async with device.get(f"{hub.base_url}/inbox", allow_redirects=False) as response:
                assert response.status == 302 and "/inbox/login" in response.headers["Location"]
        # Switched off, the password opens nothing either.
        assert (await sign_in(laptop, hub, *MASTER))[0] == 401
        # On again: signing in works again (the old sessions stay ended).
        async with owner.post(f"{api}/staff/{ids['master']}/activate") as response:
            assert response.status == 200
        async with laptop.get(f"{api}/me") as response:
            assert response.status == 401
        assert (await sign_in(laptop, hub, *MASTER))[0] == 200
    async with hub.hub.sessions() as session:
        trail = (
            await session.exec(
                select(AuditEntry.action, AuditEntry.staff_id).where(
                    AuditEntry.entity == "staff", AuditEntry.entity_id == ids["master"]
                )
            )
        ).all()
    assert trail == [("created", None), ("deactivated", ids["owner"]), ("activated", ids["owner"])]


async def test_an_account_switched_off_in_the_database_is_signed_out_on_its_next_request(
    hub: RunningHub,
) -> None:
    ids = await team(hub)
    async with client_session() as master:
        assert (await sign_in(master, hub, *MASTER))[0] == 200
        async with transaction(hub.hub.sessions) as session:
            row = await session.get(Staff, ids["master"])
            assert row is not None
            row.active = False
        for path in HARMLESS_READS:
            async with master.get(hub.base_url + path) as response:
                assert response.status == 401, path
        async with master.post(f"{hub.base_url}/api/canned", json={"title": "t", "text": "x"}) as r:
            assert r.status == 401


async def test_who_may_switch_accounts_off(hub: RunningHub) -> None:
    ids = await team(hub)
    api = f"{hub.base_url}/api"
    async with client_session() as owner, client_session() as master:
        assert (await sign_in(owner, hub, *OWNER))[0] == 200
        assert (await sign_in(master, hub, *MASTER))[0] == 200
        async with master.post(f"{api}/staff/{ids['owner']}/deactivate") as response:
            assert response.status == 403
        async with owner.post(f"{api}/staff/{ids['owner']}/deactivate") as response:
            assert response.status == 409  # not yourself
        async with owner.post(f"{api}/staff/9999/deactivate") as response:
            assert response.status == 404
        async with owner.post(f"{api}/staff/{ids['master']}/deactivate") as response:
            assert response.status == 200
    async with hub.hub.sessions() as session:
        owner_row = await session.get(Staff, ids["owner"])
        assert owner_row is not None and owner_row.active


async def test_hub_staff_deactivate_from_the_shell(
    hub: RunningHub, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    await team(hub)
    monkeypatch.setenv("DATABASE_URL", hub.hub.settings.effective_database_url())
    monkeypatch.setenv("REDIS_URL", str(hub.hub.settings.redis_url))
    async with client_session() as master:
        assert (await sign_in(master, hub, *MASTER))[0] == 200
        code = await asyncio.to_thread(hub_cli, ["staff", "deactivate", "--email", MASTER[0]])
        assert code == 0
        async with master.get(f"{hub.base_url}/api/me") as response:
            assert response.status == 401
    assert f"{MASTER[0]} is off" in capsys.readouterr().out
    code = await asyncio.to_thread(hub_cli, ["staff", "deactivate", "--email", OWNER[0]])
    assert code == 2  # the last owner
    assert "the last active owner can't be deactivated" in capsys.readouterr().err


# /metrics ---------------------------------------------------------------------------------------


async def test_metrics_answer_only_their_token(settings: Settings, redis: Any) -> None:
    del redis
    async with client_session() as anyone:
        running = await start_hub(settings)
        try:
            async with anyone.get(f"{running.base_url}/metrics") as response:
                assert response.status == 404  # no token set: off on the public address
            running.hub.settings.hub_metrics_token = SecretStr("t0ken-for-prometheus")
            for given in (None, "Bearer wrong", "t0ken-for-prometheus", "Basic dDBrZW4="):
                headers = {"Authorization": given} if given else {}
                async with anyone.get(f"{running.base_url}/metrics", headers=headers) as r:
                    assert r.status == 401, given
                    assert "hub_messages" not in await r.text()
            bearer = {"Authorization": "Bearer t0ken-for-prometheus"}
            async with anyone.get(f"{running.base_url}/metrics", headers=bearer) as response:
                assert response.status == 200 and "hub_dead_letters" in await response.text()
        finally:
            await running.stop()
