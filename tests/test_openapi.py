"""The OpenAPI document agrees with the app: every /api/ route is documented, every
documented route exists, and each body schema is the model its handler reads."""

from __future__ import annotations

import inspect
import re

from aiohttp import web

from hub.web import openapi
from hub.web.http_json import read_body
from tests.support import RunningHub, client_session, login
from tests.test_webchat import add_owner

BODY_READ = re.compile(r"read_body\(request, (\w+)\)")


def api_routes(app: web.Application) -> dict[tuple[str, str], object]:
    found = {}
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        if path and path.startswith("/api/") and route.method != "HEAD":
            found[(route.method, path)] = route.handler
    return found


async def test_the_document_matches_the_routes_and_the_handlers(hub: RunningHub) -> None:
    routes = api_routes(hub.runner.app)
    documented = {(e.method, e.path): e for e in openapi.ENDPOINTS}
    assert set(routes) - set(documented) == set(), "routes missing from the document"
    assert set(documented) - set(routes) == set(), "documented routes that don't exist"
    for key, handler in routes.items():
        used = set(BODY_READ.findall(inspect.getsource(handler)))  # type: ignore[arg-type]
        endpoint = documented[key]
        listed = {endpoint.body.__name__} if endpoint.body else set()
        assert used == listed, f"{key}: the handler reads {used}, the document says {listed}"
        if endpoint.body is not None:
            # The name found in the source is the very class documented.
            module = inspect.getmodule(handler)
            assert getattr(module, endpoint.body.__name__) is endpoint.body
    assert read_body  # the helper the pattern looks for


async def test_the_document_is_served_to_staff(hub: RunningHub) -> None:
    email, password = await add_owner(hub)
    async with client_session() as staff:
        async with staff.get(f"{hub.base_url}/api/openapi.json") as response:
            assert response.status == 401
        assert await login(staff, hub.base_url, email, password) == 200
        async with staff.get(f"{hub.base_url}/api/openapi.json") as response:
            assert response.status == 200
            document = await response.json()
    assert document["openapi"] == "3.1.0"
    take = document["paths"]["/api/clients/{id}/messages"]["post"]
    ref = take["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = document["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert schema["required"] == ["text"]
    assert set(schema["properties"]) == {"text", "channel", "inbox", "idempotency_key"}
    assert document["paths"]["/api/auth/login"]["post"]["security"] == []
