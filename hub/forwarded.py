"""Who is on the other end of a request, and did it come over TLS, behind a reverse proxy.

The hub usually runs behind nginx, Caddy or a load balancer: the TCP peer is then the proxy,
and the client's address and scheme are in `X-Forwarded-For` / `X-Forwarded-Proto`. Those
headers are believed only from the proxies the operator lists in HUB_TRUSTED_PROXIES (anyone
can send them); from anyone else the TCP peer is the client. `X-Forwarded-For` is read from
the right: each trusted proxy appends the address it saw, so the first address that is not a
trusted proxy is the client (the ones left of it are whatever the client chose to send).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from hub.config import Network

CLIENT_ADDRESS = web.RequestKey("client_address", str)
OVER_TLS = web.RequestKey("over_tls", bool)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":")[0]
    try:
        found = ipaddress.ip_address(text)
    except ValueError:
        return None
    # An IPv4 client reaching a dual-stack socket shows as ::ffff:a.b.c.d.
    mapped = getattr(found, "ipv4_mapped", None)
    return mapped or found


def _trusted(address: object, networks: Iterable[Network]) -> bool:
    return address is not None and any(address in net for net in networks)  # type: ignore[operator]


def client_of(peer: str | None, forwarded_for: str, networks: tuple[Network, ...]) -> str:
    """The client's address, from the TCP peer and X-Forwarded-For (see the module's note)."""
    current = _address(peer or "")
    if current is None:
        return peer or "unknown"
    if not _trusted(current, networks):
        return str(current)
    hops = [hop for part in forwarded_for.split(",") if (hop := part.strip())]
    for hop in reversed(hops):
        found = _address(hop)
        if found is None:
            break  # garbage a client wrote: the last address we could trust stands
        current = found
        if not _trusted(current, networks):
            break
    return str(current)


def middleware(networks: tuple[Network, ...]) -> Middleware:
    """Sets request[CLIENT_ADDRESS] and request[OVER_TLS] for every request."""

    @web.middleware
    async def forwarded(request: web.Request, handler: Handler) -> web.StreamResponse:
        peer = request.remote
        from_proxy = _trusted(_address(peer or ""), networks)
        request[CLIENT_ADDRESS] = client_of(
            peer, request.headers.get("X-Forwarded-For", "") if from_proxy else "", networks
        )
        proto = _first(request.headers.get("X-Forwarded-Proto", "")) if from_proxy else ""
        request[OVER_TLS] = request.secure or proto == "https"
        return await handler(request)

    return forwarded


def _first(value: str) -> str:
    return value.split(",")[0].strip().lower()


def client_address(request: web.BaseRequest) -> str:
    return request.get(CLIENT_ADDRESS) or request.remote or "unknown"


def secure_cookies(request: web.BaseRequest, public_url_is_https: bool) -> bool:
    """Whether cookies set in answer to this request get `Secure`: when the public address is
    https, when the request came over TLS (directly, or as a trusted proxy says), and when any
    peer says X-Forwarded-Proto: https. The last one is believed from anyone because it can
    only make a cookie stricter: a client who lies gets a cookie its browser won't send back
    over plain HTTP, and hurts no one else."""
    return (
        public_url_is_https
        or bool(request.get(OVER_TLS))
        or request.secure
        or _first(request.headers.get("X-Forwarded-Proto", "")) == "https"
    )
