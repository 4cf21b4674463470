"""Staff API authentication, bad input, health and metrics."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import SecretStr

from channels.base import ChannelStatus
from tests.support import RunningHub, client_session, eventually, login, next_frame, status_of
from tests.test_webchat import add_owner

METRICS_TOKEN = "metrics-token-of-the-tests"
PROMETHEUS = {"Authorization": f"Bearer {METRICS_TOKEN}"}


async def test_wrong_password_is_refused_and_api_needs_a_session(hub: RunningHub) -> None:
    email, password = await add_owner(hub)
    api = f"{hub.base_url}/api"
    async with client_session() as staff:
        assert await status_of(staff, "GET", f"{api}/conversations") == 401
        assert (
            await status_of(staff, "POST", f"{api}/conversations/1/messages", json={"text": "hi"})
            == 401
        )
        assert await login(staff, hub.base_url, email, "wrong-password") == 401
        assert await login(staff, hub.base_url, "nobody@salon.test", password) == 401
        assert await status_of(staff, "GET", f"{api}/conversations") == 401
        assert await login(staff, hub.base_url, email.upper(), password) == 200
        async with staff.get(f"{api}/me") as response:
            assert (await response.json())["role"] == "owner"
        assert await status_of(staff, "POST", f"{api}/auth/logout") == 200
        assert await status_of(staff, "GET", f"{api}/conversations") == 401


async def test_bad_requests_are_4xx(hub: RunningHub) -> None:
    email, password = await add_owner(hub)
    api = f"{hub.base_url}/api"
    async with client_session() as staff:
        assert await status_of(staff, "POST", f"{api}/auth/login", data="email=x") == 415
        assert (
            await status_of(
                staff,
                "POST",
                f"{api}/auth/login",
                data="{broken",
                headers={"Content-Type": "application/json"},
            )
            == 400
        )
        assert await login(staff, hub.base_url, email, password) == 200
        assert await status_of(staff, "GET", f"{api}/conversations?status=nope") == 400
        assert await status_of(staff, "GET", f"{api}/conversations/abc/messages") == 400
        assert await status_of(staff, "GET", f"{api}/conversations/999/messages") == 404
        assert (
            await status_of(
                staff, "POST", f"{api}/conversations/999/messages", json={"text": "hello"}
            )
            == 404
        )
        async with staff.post(f"{api}/conversations/1/messages", json={"text": ""}) as response:
            assert response.status == 400
            assert (await response.json())["details"][0]["field"] == "text"


async def test_health_and_metrics(hub: RunningHub) -> None:
    hub.hub.settings.hub_metrics_token = SecretStr(METRICS_TOKEN)
    async with client_session() as anyone:
        async with anyone.get(f"{hub.base_url}/healthz") as response:
            assert response.status == 200
            assert await response.json() == {
                "redis": "ok",
                "database": "ok",
                "ok": True,
                "channels": {"webchat": {"state": "ok", "reason": "", "until": None}},
            }
        await anyone.get(f"{hub.base_url}/chat")
        ws = await anyone.ws_connect(hub.ws_url("/ws/chat"))
        await next_frame(ws, "ready")
        await ws.send_json({"type": "message", "text": "count me"})
        await next_frame(ws)
        await ws.close()

        async def counted() -> str:
            async with anyone.get(f"{hub.base_url}/metrics", headers=PROMETHEUS) as response:
                body = await response.text()
            return body if 'hub_pipeline_latency_seconds_count{channel="webchat"}' in body else ""

        body = await eventually(counted)
    assert 'hub_messages_in_total{channel="webchat"}' in body
    assert 'hub_stream_lag{group="dispatch",stream="hub:out:{webchat}"}' in body
    assert "hub_dead_letters 0.0" in body


async def test_a_paused_channel_shows_in_health_and_the_api(hub: RunningHub) -> None:
    until = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    paused = ChannelStatus("paused", "Instagram asks for a login challenge", until)
    hub.hub.channels["webchat"].status = lambda: paused  # type: ignore[method-assign]
    email, password = await add_owner(hub)
    async with client_session() as staff:
        async with staff.get(f"{hub.base_url}/healthz") as response:
            health = await response.json()
        # The hub is up; the channel's pause is shown, not turned into a 503.
        assert response.status == 200 and health["ok"] is True
        assert health["channels"]["webchat"] == {
            "state": "paused",
            "reason": "Instagram asks for a login challenge",
            "until": "2030-01-01T12:00:00+00:00",
        }
        assert await status_of(staff, "GET", f"{hub.base_url}/api/channels") == 401
        assert await login(staff, hub.base_url, email, password) == 200
        async with staff.get(f"{hub.base_url}/api/channels") as response:
            listed = await response.json()
        assert listed == [{"channel": "webchat", **health["channels"]["webchat"]}]


async def test_failed_logins_are_throttled_and_csrf_is_required(hub: RunningHub) -> None:
    email, password = await add_owner(hub)
    async with client_session() as staff:
        for _ in range(5):
            assert await login(staff, hub.base_url, email, "guess") == 401
        async with staff.post(
            f"{hub.base_url}/api/auth/login", json={"email": email, "password": password}
        ) as response:
            assert response.status == 429
            assert int(response.headers["Retry-After"]) > 0
        # Another staff member from the same address still signs in.
        other, other_password = await add_owner(hub, "admin@salon.test", "another-pass")
        assert await login(staff, hub.base_url, other, other_password) == 200
        token = staff.headers.pop("X-CSRF-Token")
        assert await status_of(staff, "POST", f"{hub.base_url}/api/auth/logout") == 403
        assert await status_of(staff, "GET", f"{hub.base_url}/api/me") == 200  # still signed in
        wrong = ("y" if token[0] == "x" else "x") + token[1:]
        headers = {"X-CSRF-Token": wrong}
        assert (
            await status_of(staff, "POST", f"{hub.base_url}/api/auth/logout", headers=headers)
            == 403
        )
        headers = {"X-CSRF-Token": token}
        assert (
            await status_of(staff, "POST", f"{hub.base_url}/api/auth/logout", headers=headers)
            == 200
        )
        assert await status_of(staff, "GET", f"{hub.base_url}/api/me") == 401


def test_the_hash_cost_is_set_by_the_hub_and_old_hashes_still_verify() -> None:
    from argon2 import PasswordHasher

    from crm_store.staff import configure_hashing, hash_password

    configure_hashing(time_cost=2, memory_kib=128)
    try:
        stored = hash_password("correct horse")
        assert "$m=128,t=2," in stored
        # A hash made with other parameters (say, before the owner lowered them) verifies.
        assert PasswordHasher(time_cost=1, memory_cost=64).verify(stored, "correct horse")
    finally:
        configure_hashing(time_cost=1, memory_kib=64)
