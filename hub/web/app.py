"""The HTTP surface: channel routes, the staff API, /healthz and /metrics."""

from __future__ import annotations

import hmac
import logging

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from hub import forwarded, metrics
from hub.forwarded import client_address
from hub.pipeline.bus import DEAD_STREAM, inbound_stream, outbound_stream
from hub.pipeline.dispatcher import GROUP as DISPATCH_GROUP
from hub.pipeline.router import GROUP as ROUTER_GROUP
from hub.state import HUB, Hub
from hub.web import (
    analytics_api,
    api,
    auth,
    booking_api,
    broadcasts_api,
    clients_api,
    events_api,
    inbox_api,
    openapi,
    roles,
    team_api,
    ui,
)
from hub.web.answers import ErrorBody
from hub.web.client_files import sandbox_files

log = logging.getLogger(__name__)
LAG_SCAN_LIMIT = 10_000


class AccessLogger(AbstractAccessLogger):
    """Request lines without their query strings: webhooks carry secrets there (Meta's verify
    token in the handshake), and a log must never hold one."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            "%s %s %s %d %.3fs",
            client_address(request),
            request.method,
            request.path,
            response.status,
            time,
        )


@web.middleware
async def errors(request: web.Request, handler: auth.Handler) -> web.StreamResponse:
    """4xx stay as they are; anything unexpected is logged and answered with a JSON 500."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return web.json_response({"error": "internal error"}, status=500)


@web.middleware
async def api_refusals(request: web.Request, handler: auth.Handler) -> web.StreamResponse:
    """aiohttp's own refusals under /api/ (no such route 404, a method the route lacks 405, a
    body over client_max_size 413) in the API's error shape, as every other refusal there;
    elsewhere they stay as aiohttp writes them."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        ours = exc.content_type == "application/json"
        if request.path.startswith("/api/") and exc.status >= 400 and not ours:
            refused = ErrorBody(error=exc.reason.lower())
            exc.text = refused.model_dump_json(exclude_unset=True)
            exc.content_type = "application/json"
        raise


async def healthz(request: web.Request) -> web.Response:
    state = await request.app[HUB].health()
    return web.json_response(state, status=200 if state["ok"] else 503)


@web.middleware
async def guard_metrics(request: web.Request, handler: auth.Handler) -> web.StreamResponse:
    """/metrics on the main address answers only its bearer token (HUB_METRICS_TOKEN); with
    none set it is off there. The figures name channels, volumes and queues: not for anyone."""
    if request.path != "/metrics":
        return await handler(request)
    token = request.app[HUB].settings.hub_metrics_token
    if token is None:
        raise web.HTTPNotFound(text="metrics are off on this address (docs/security.md)")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    expected = token.get_secret_value().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
        raise web.HTTPUnauthorized(
            text="a bearer token is needed", headers={"WWW-Authenticate": 'Bearer realm="metrics"'}
        )
    return await handler(request)


async def metrics_view(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    try:
        await refresh_stream_gauges(hub)
    except Exception as exc:  # metrics must answer even when Redis does not
        log.warning("stream gauges unavailable: %s", exc)
    return web.Response(body=metrics.render(), content_type="text/plain", charset="utf-8")


async def refresh_stream_gauges(hub: Hub) -> None:
    groups = [(inbound_stream(n), ROUTER_GROUP) for n in range(hub.bus.shards)]
    groups += [(outbound_stream(ch), DISPATCH_GROUP) for ch in hub.channels]
    for stream, group in groups:
        metrics.STREAM_LAG.labels(stream, group).set(await stream_lag(hub, stream, group))
    metrics.DEAD_LETTERS.set(await hub.redis.xlen(DEAD_STREAM))


async def stream_lag(hub: Hub, stream: str, group: str) -> int:
    """Pending plus not yet delivered. Redis 7 reports the latter as `lag`; 6.2 does not, so
    it is counted (up to LAG_SCAN_LIMIT) from the group's last delivered id."""
    if not await hub.redis.exists(stream):
        return 0
    info = next((g for g in await hub.redis.xinfo_groups(stream) if g["name"] == group), None)
    if info is None:
        return int(await hub.redis.xlen(stream))
    lag = info.get("lag")
    if lag is None:
        unread = await hub.redis.xrange(
            stream, min=f"({info['last-delivered-id']}", count=LAG_SCAN_LIMIT
        )
        lag = len(unread)
    return int(info.get("pending", 0)) + int(lag)


async def index(request: web.Request) -> web.Response:
    del request
    return web.Response(
        text=(
            "Salon hub is running.\n  staff inbox: /inbox\n  web chat:    /chat\n"
            "  staff API:   /api/\n  health:      /healthz\n"
        ),
        content_type="text/plain",
    )


def metrics_app(hub: Hub) -> web.Application:
    """/metrics alone, without a token: for HUB_METRICS_LISTEN, an address of its own."""
    app = web.Application()
    app[HUB] = hub
    app.router.add_get("/metrics", metrics_view)
    return app


def create_app(hub: Hub) -> web.Application:
    app = web.Application(
        middlewares=[
            forwarded.middleware(hub.settings.trusted_proxies),
            sandbox_files,
            errors,
            api_refusals,
            guard_metrics,
            auth.require_staff(lambda r: r.app[HUB].redis, roles.load_active),
        ],
        client_max_size=1024 * 1024,
    )
    app[HUB] = hub
    app.router.add_get("/", index)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_view)
    app.add_routes(api.routes)
    app.add_routes(booking_api.routes)
    app.add_routes(clients_api.routes)
    app.add_routes(inbox_api.routes)
    app.add_routes(broadcasts_api.routes)
    app.add_routes(analytics_api.routes)
    app.add_routes(team_api.routes)
    events_api.setup(app)
    app.add_routes(openapi.routes)
    ui.setup(app)
    for channel in hub.channels.values():
        for route in channel.routes():
            app.router.add_route(route.method, route.path, route.handler, name=route.name)
    return app
