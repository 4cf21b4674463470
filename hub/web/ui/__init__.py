"""The staff inbox in the browser: pages rendered from Jinja2 templates, with plain scripts that
talk to the JSON API (docs/api.md) and listen to `GET /api/events`. Every asset is in the
package (hub/web/ui/static): nothing is loaded from the internet.

Pages: /inbox/login, /inbox (conversations, a conversation, the client's card), /inbox/calendar,
/inbox/broadcasts (owner/admin), /inbox/analytics (owner/admin; rendered whole on the server).
A page without a live session redirects to the login page; the API enforces roles and CSRF, so
the pages only hide what the API would refuse anyway.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from aiohttp import web

from crm_store.models import Staff
from hub.web import analytics_page, auth, roles
from hub.web.http_json import hub_of
from prompts import LANGUAGES, pick_language, ui_strings

HERE = Path(__file__).parent
LANG_COOKIE = "hub_lang"
# The pages' strings: shared ones, then each page's own (prompts/ui/<name>.json).
PAGES = {
    page: ("common", page) for page in ("login", "inbox", "calendar", "broadcasts", "analytics")
}
CSP = (
    "default-src 'self'; img-src 'self' data: https:; media-src 'self' https:; "
    "style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'self'"
)


@cache
def asset(name: str) -> str:
    """A static file's URL with a hash of its content, so a browser never keeps an old copy
    after an upgrade (the files are read once per process: they change only with a release)."""
    digest = hashlib.sha256((HERE / "static" / name).read_bytes()).hexdigest()[:12]
    return f"/inbox/static/{name}?v={digest}"


_templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)
_templates.globals["asset"] = asset


def language_of(request: web.Request) -> str:
    """?lang= (remembered in a cookie), else the cookie, else the browser's languages."""
    return pick_language(
        request.query.get("lang"),
        request.cookies.get(LANG_COOKIE),
        request.headers.get("Accept-Language"),
    )


def strings(page: str, language: str) -> dict[str, str]:
    merged: dict[str, str] = {}
    for name in PAGES[page]:
        merged.update(ui_strings(name, language))
    return merged


def render(request: web.Request, page: str, **context: Any) -> web.Response:
    language = language_of(request)
    texts = strings(page, language)
    html = _templates.get_template(f"{page}.html").render(
        page=page, lang=language, languages=LANGUAGES, t=texts, strings=texts, **context
    )
    response = web.Response(text=html, content_type="text/html", charset="utf-8")
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"
    if request.query.get("lang") == language:
        response.set_cookie(LANG_COOKIE, language, max_age=365 * 86400, samesite="Strict", path="/")
    return response


async def _signed_in(request: web.Request) -> Staff | None:
    """The staff member of a live session, if their account is on."""
    signed = await auth.session_of(hub_of(request).redis, request.cookies.get(auth.COOKIE))
    if signed is None:
        return None
    request[auth.STAFF_KEY] = signed.staff_id
    return await roles.staff_of(request) if await roles.load_active(request) else None


def _to_login(request: web.Request) -> web.HTTPFound:
    return web.HTTPFound(f"/inbox/login?next={quote(request.path_qs, safe='')}")


async def login_page(request: web.Request) -> web.Response:
    return render(request, "login")


async def inbox_page(request: web.Request) -> web.Response:
    if await _signed_in(request) is None:
        raise _to_login(request)
    return render(request, "inbox")


async def calendar_page(request: web.Request) -> web.Response:
    if await _signed_in(request) is None:
        raise _to_login(request)
    return render(request, "calendar")


async def broadcasts_page(request: web.Request) -> web.Response:
    # Owners and admins only: the API refuses masters, and the page tells them so.
    if await _signed_in(request) is None:
        raise _to_login(request)
    return render(request, "broadcasts")


async def analytics_view(request: web.Request) -> web.Response:
    """The owner's figures, drawn here (charts are SVG): the page works without a script."""
    me = await _signed_in(request)
    if me is None:
        raise _to_login(request)
    hub = hub_of(request)
    if not roles.is_manager(me):
        response = render(request, "analytics", me=me, forbidden=True)
        response.set_status(403)
        return response
    language = language_of(request)
    status, view = await analytics_page.page_view(
        hub, request.query, language=language, texts=strings("analytics", language)
    )
    response = render(request, "analytics", me=me, forbidden=False, **view)
    response.set_status(status)
    return response


def setup(app: web.Application) -> None:
    app.router.add_get("/inbox/login", login_page)
    app.router.add_get("/inbox", inbox_page)
    app.router.add_get("/inbox/calendar", calendar_page)
    app.router.add_get("/inbox/broadcasts", broadcasts_page)
    app.router.add_get("/inbox/analytics", analytics_view)
    app.router.add_static("/inbox/static", HERE / "static")
