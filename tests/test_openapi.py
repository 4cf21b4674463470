"""The OpenAPI document agrees with the app: every /api/ route is documented, every
documented route exists, each body schema is the model its handler reads, and each answer
schema the model its handler answers with (http_json.answer), read from the handlers' source.
tests/test_api_contract.py checks the same document against a live hub."""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
import typing
from types import FunctionType, ModuleType
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from hub.web import openapi
from hub.web.http_json import answer, read_body
from tests.support import RunningHub, client_session, login
from tests.test_webchat import add_owner

BODY_READ = re.compile(r"read_body\(request, (\w+)\)")


def api_routes(app: web.Application) -> dict[tuple[str, str], Any]:
    found = {}
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        if path and path.startswith("/api/") and route.method != "HEAD":
            found[(route.method, path)] = route.handler
    return found


def answered(handler: FunctionType) -> set[type[BaseModel]]:
    """The models a handler passes to answer(), directly or through the helpers of its module
    it calls: a model built there, or what a builder's return type says."""
    return _Answers(inspect.getmodule(handler)).of(handler)  # type: ignore[arg-type]


class _Answers:
    def __init__(self, module: ModuleType) -> None:
        self.module = module
        self.seen: set[str] = set()

    def of(self, function: FunctionType) -> set[type[BaseModel]]:
        self.seen.add(function.__name__)
        tree = ast.parse(textwrap.dedent(inspect.getsource(function))).body[0]
        found: set[type[BaseModel]] = set()
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
                continue
            if node.func.id == answer.__name__:
                found |= self.model(node.args[0], tree)
                continue
            helper = vars(self.module).get(node.func.id)
            if (
                inspect.isfunction(helper)
                and inspect.getmodule(helper) is self.module
                and helper.__name__ not in self.seen
            ):
                found |= self.of(helper)
        return found

    def model(self, node: ast.expr, scope: ast.AST) -> set[type[BaseModel]]:
        """What the expression passed to answer() is an instance of."""
        if isinstance(node, ast.Await):
            return self.model(node.value, scope)
        if isinstance(node, ast.Call):
            return {_one(self.returned(node.func))}
        if isinstance(node, ast.Name):
            found = set()
            for assign in ast.walk(scope):
                if isinstance(assign, ast.Assign):
                    for target in assign.targets:
                        if isinstance(target, ast.Name) and target.id == node.id:
                            found |= self.model(assign.value, scope)
                        elif isinstance(target, ast.Tuple) and any(
                            isinstance(t, ast.Name) and t.id == node.id for t in target.elts
                        ):
                            # (one,) = await builder(...) -> list[Model]
                            assert isinstance(assign.value, ast.Await | ast.Call)
                            call = (
                                assign.value.value
                                if isinstance(assign.value, ast.Await)
                                else assign.value
                            )
                            (item,) = typing.get_args(self.returned(call.func))  # type: ignore[union-attr]
                            found.add(_one(item))
            if found:
                return found
        raise AssertionError(f"can't tell what {ast.unparse(node)} answers with")

    def returned(self, func: ast.expr) -> Any:
        """What calling `func` gives: a model class itself, Model.model_validate, or a function
        whose return type says."""
        if isinstance(func, ast.Attribute):
            return self.returned(func.value)
        assert isinstance(func, ast.Name), ast.unparse(func)
        called = vars(self.module)[func.id]
        if isinstance(called, type):
            return called
        return typing.get_type_hints(called)["return"]


def _one(model: Any) -> type[BaseModel]:
    assert isinstance(model, type) and issubclass(model, BaseModel), model
    return model


async def test_the_document_matches_the_routes_and_the_handlers(hub: RunningHub) -> None:
    routes = api_routes(hub.runner.app)
    documented = {(e.method, e.path): e for e in openapi.ENDPOINTS}
    assert set(routes) - set(documented) == set(), "routes missing from the document"
    assert set(documented) - set(routes) == set(), "documented routes that don't exist"
    for key, handler in routes.items():
        endpoint = documented[key]
        module = inspect.getmodule(handler)
        used = set(BODY_READ.findall(inspect.getsource(handler)))
        listed = {endpoint.body.__name__} if endpoint.body else set()
        assert used == listed, f"{key}: the handler reads {used}, the document says {listed}"
        if endpoint.body is not None:
            # The name found in the source is the very class documented.
            assert getattr(module, endpoint.body.__name__) is endpoint.body
        answers = answered(handler)
        listed_answer = {endpoint.answer} if isinstance(endpoint.answer, type) else set()
        assert answers == listed_answer, (
            f"{key}: the handler answers {answers}, the document says {endpoint.answer}"
        )
    assert read_body  # the helper the pattern looks for


def test_every_business_setting_is_answered() -> None:
    from crm_store.business import EDITABLE
    from hub.web.booking_answers import BusinessView

    assert tuple(BusinessView.model_fields) == EDITABLE


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
    answer_ref = take["responses"]["201"]["content"]["application/json"]["schema"]["$ref"]
    assert answer_ref == "#/components/schemas/TimelineMessage"
    assert set(take["responses"]) == {"200", "201", "400", "401", "403", "404", "413", "415"}
    refused = take["responses"]["404"]["content"]["application/json"]["schema"]["$ref"]
    assert refused == "#/components/schemas/ErrorBody"
    csv = document["paths"]["/api/analytics/{table}.csv"]["get"]["responses"]["200"]
    assert set(csv["content"]) == {"text/csv"}
    (path_id,) = document["paths"]["/api/clients/{id}"]["get"]["parameters"]
    assert path_id["schema"] == {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}


async def test_aiohttp_own_refusals_under_api_are_in_the_error_shape(hub: RunningHub) -> None:
    email, password = await add_owner(hub)
    async with client_session() as staff:
        assert await login(staff, hub.base_url, email, password) == 200
        async with staff.get(f"{hub.base_url}/api/no-such-thing") as response:
            assert (response.status, await response.json()) == (404, {"error": "not found"})
        async with staff.put(f"{hub.base_url}/api/me") as response:
            assert response.status == 405
            assert await response.json() == {"error": "method not allowed"}
            assert response.headers["Allow"] == "GET,HEAD"
        async with staff.get(f"{hub.base_url}/no-such-page") as response:
            assert (response.status, response.content_type) == (404, "text/plain")
