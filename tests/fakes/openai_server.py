"""A fake OpenAI-compatible chat completions server, spoken to by the real `openai` client.

    async with FakeOpenAI() as fake:
        fake.call_tool("find_slots", {"service_id": 1}).reply("Tomorrow at 10:00 is free.")
        client = fake.client()  # openai.AsyncOpenAI(base_url=fake.base_url, api_key="test")
        ...
        fake.requests  # every request body, in order

Answers come from a script (a queue of steps: text, tool calls, HTTP errors, delays, raw
bodies), and when the script is empty from `policy(request_body) -> step` (the evaluation
runner drives whole conversations that way). Bodies have the shapes of the real API —
`chat.completion` objects, `chat.completion.chunk` SSE streams ending with `data: [DONE]`,
tool calls streamed as deltas, usage (also as the last chunk with
`stream_options.include_usage`), and `{"error": {"message", "type", "param", "code"}}` — and
the message history is checked as the real API checks it (a `tool` message must answer a
preceding tool call; every tool call must be answered), so a brain that builds a history the
real API would reject fails here too.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import openai
from aiohttp import web

from bots.tokens import PER_MESSAGE, REPLY_PRIMING, estimate_tokens

ROLES = ("system", "developer", "user", "assistant", "tool")
ARGUMENT_PIECE = 8  # characters of tool arguments per streamed delta


# Steps ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Text:
    """An assistant answer in words (finish_reason "stop")."""

    text: str


@dataclass(frozen=True)
class ToolCall:
    name: str
    # A dict is sent as JSON; a string is sent as it is, so it may be deliberately broken.
    arguments: str | Mapping[str, Any] = "{}"
    id: str | None = None  # default: call_1, call_2, … in the order the fake makes them

    def arguments_json(self) -> str:
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(self.arguments, ensure_ascii=False)


@dataclass(frozen=True)
class Calls:
    """One assistant turn calling one or more tools (finish_reason "tool_calls")."""

    calls: tuple[ToolCall, ...]
    text: str | None = None  # content sent alongside the calls, as some models do


@dataclass(frozen=True)
class Fail:
    """An HTTP error in OpenAI's error shape; the defaults per status are the real API's."""

    status: int
    message: str | None = None
    type: str | None = None
    code: str | None = None
    retry_after: float | None = None  # seconds, the `Retry-After` header
    retry_after_ms: int | None = None  # the `retry-after-ms` header the OpenAI client prefers


@dataclass(frozen=True)
class Delay:
    """Hold the answer for `seconds` (or until `release()`/shutdown), then give `then`.
    A client with a shorter timeout gives up first."""

    seconds: float
    then: Step | None = None


@dataclass(frozen=True)
class Raw:
    """A body sent as it is (a dict as JSON, a string as text): for broken responses."""

    body: Any
    status: int = 200


Step = Text | Calls | Fail | Delay | Raw
Policy = Callable[[dict[str, Any]], "Step | Awaitable[Step | None] | None"]

DEFAULT_ERRORS: dict[int, tuple[str, str, str | None]] = {
    400: ("Invalid request.", "invalid_request_error", None),
    401: (
        "Incorrect API key provided: test. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        "invalid_request_error",
        "invalid_api_key",
    ),
    403: ("You are not allowed to sample from this model.", "invalid_request_error", None),
    404: (
        "The model does not exist or you do not have access to it.",
        "invalid_request_error",
        "model_not_found",
    ),
    429: (
        "Rate limit reached for requests. Please try again shortly.",
        "requests",
        "rate_limit_exceeded",
    ),
    500: (
        "The server had an error while processing your request. Sorry about that!",
        "server_error",
        None,
    ),
    503: ("The engine is currently overloaded, please try again later.", "server_error", None),
}


# The server -----------------------------------------------------------------------------


@dataclass
class FakeOpenAI:
    policy: Policy | None = None
    script: deque[Step] = field(default_factory=deque)
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    # Requests that found neither a scripted step nor a policy answer (answered with a 500
    # the client does not retry): a test that sees one forgot a step.
    unexpected: list[dict[str, Any]] = field(default_factory=list)
    # The usage reported with each answer, in order: what a brain should have added up.
    usage: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0

    def __post_init__(self) -> None:
        self._runner: web.AppRunner | None = None
        self._released = asyncio.Event()
        self._ids = itertools.count(1)
        self._call_ids = itertools.count(1)

    # Lifecycle

    async def __aenter__(self) -> FakeOpenAI:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._completions)
        # A short shutdown: held (Delay) answers are released on stop, nothing else lingers.
        self._runner = web.AppRunner(app, shutdown_timeout=1.0, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        self.release()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def client(self, **options: Any) -> openai.AsyncOpenAI:
        """The real client pointed here; no retries and a short timeout unless asked."""
        options.setdefault("max_retries", 0)
        options.setdefault("timeout", 5.0)
        return openai.AsyncOpenAI(base_url=self.base_url, api_key="test", **options)

    # Script (each method returns the fake, so steps chain)

    def then(self, *steps: Step) -> FakeOpenAI:
        self.script.extend(steps)
        return self

    def reply(self, text: str) -> FakeOpenAI:
        return self.then(Text(text))

    def call_tool(
        self,
        name: str,
        arguments: str | Mapping[str, Any] | None = None,
        *,
        id: str | None = None,
        text: str | None = None,
    ) -> FakeOpenAI:
        return self.then(
            Calls((ToolCall(name, "{}" if arguments is None else arguments, id),), text)
        )

    def call_tools(self, *calls: ToolCall, text: str | None = None) -> FakeOpenAI:
        return self.then(Calls(tuple(calls), text))

    def fail(
        self,
        status: int,
        *,
        message: str | None = None,
        type: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        retry_after_ms: int | None = None,
        times: int = 1,
    ) -> FakeOpenAI:
        """`times` answers in a row: one per attempt of a retrying client."""
        step = Fail(status, message, type, code, retry_after, retry_after_ms)
        return self.then(*([step] * times))

    def delay(self, seconds: float, then: Step | None = None) -> FakeOpenAI:
        return self.then(Delay(seconds, then))

    def raw(self, body: Any, status: int = 200) -> FakeOpenAI:
        return self.then(Raw(body, status))

    def release(self) -> None:
        """Let every held (Delay) answer go now."""
        self._released.set()

    @property
    def pending(self) -> int:
        return len(self.script)

    # Handling

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        self.headers.append(dict(request.headers))
        try:
            body = json.loads(await request.read())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return error_response(
                400,
                "We could not parse the JSON body of your request. (HINT: This likely means "
                "you aren't using your HTTP library correctly.)",
                "invalid_request_error",
            )
        if not isinstance(body, dict):
            return error_response(
                400, "The request body must be a JSON object.", "invalid_request_error"
            )
        self.requests.append(body)
        problem = check_request(body)
        if problem is not None:
            message, param, code = problem
            return error_response(400, message, "invalid_request_error", param=param, code=code)
        step = await self._next(body)
        if step is None:
            self.unexpected.append(body)
            return error_response(
                500,
                "fake OpenAI: no scripted step and no policy answer",
                "server_error",
                headers={"x-should-retry": "false"},
            )
        return await self._answer(request, body, step)

    async def _next(self, body: dict[str, Any]) -> Step | None:
        if self.script:
            return self.script.popleft()
        if self.policy is None:
            return None
        step = self.policy(body)
        if inspect.isawaitable(step):
            step = await step
        return step

    async def _answer(
        self, request: web.Request, body: dict[str, Any], step: Step
    ) -> web.StreamResponse:
        if isinstance(step, Delay):
            try:
                await asyncio.wait_for(self._released.wait(), step.seconds)
            except TimeoutError:
                pass
            return await self._answer(request, body, step.then or Text("(late answer)"))
        if isinstance(step, Fail):
            return self._failure(step)
        if isinstance(step, Raw):
            if isinstance(step.body, str):
                return web.Response(text=step.body, status=step.status)
            return web.json_response(step.body, status=step.status)
        calls = self._numbered(step.calls) if isinstance(step, Calls) else ()
        text = step.text
        usage = self._usage(body, text, calls)
        self.usage.append(usage)
        if body.get("stream"):
            return await self._stream(request, body, text, calls, usage)
        return web.json_response(
            self._completion(body, text, calls, usage),
            headers={"x-request-id": f"req_{next(self._ids)}"},
        )

    def _numbered(self, calls: tuple[ToolCall, ...]) -> tuple[ToolCall, ...]:
        return tuple(
            c if c.id else ToolCall(c.name, c.arguments, f"call_{next(self._call_ids)}")
            for c in calls
        )

    def _failure(self, step: Fail) -> web.Response:
        message, type_, code = DEFAULT_ERRORS.get(step.status, ("Error.", "server_error", None))
        headers = {"x-request-id": f"req_{next(self._ids)}"}
        if step.retry_after is not None:
            headers["retry-after"] = str(step.retry_after)
        if step.retry_after_ms is not None:
            headers["retry-after-ms"] = str(step.retry_after_ms)
        return error_response(
            step.status,
            step.message or message,
            step.type or type_,
            code=step.code or code,
            headers=headers,
        )

    def _usage(
        self, body: dict[str, Any], text: str | None, calls: tuple[ToolCall, ...]
    ) -> dict[str, Any]:
        """Counted from the request's text, roughly, with the project's estimate (never
        tiktoken: the fake must not download its BPE file)."""
        prompt = REPLY_PRIMING + sum(
            PER_MESSAGE + estimate_tokens(_texts(m)) for m in body["messages"]
        )
        if body.get("tools"):
            prompt += estimate_tokens(json.dumps(body["tools"], ensure_ascii=False))
        completion = estimate_tokens(text or "") + sum(
            estimate_tokens(c.name + c.arguments_json()) for c in calls
        )
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def _envelope(self, body: dict[str, Any], object_: str, completion_id: str) -> dict[str, Any]:
        return {
            "id": completion_id,
            "object": object_,
            "created": int(time.time()),
            "model": body["model"],
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
        }

    def _completion(
        self,
        body: dict[str, Any],
        text: str | None,
        calls: tuple[ToolCall, ...],
        usage: dict[str, Any],
    ) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": text,
            "refusal": None,
            "annotations": [],
        }
        if calls:
            message["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments_json()},
                }
                for c in calls
            ]
        return {
            **self._envelope(body, "chat.completion", f"chatcmpl-{next(self._ids)}"),
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": "tool_calls" if calls else "stop",
                }
            ],
            "usage": usage,
        }

    async def _stream(
        self,
        request: web.Request,
        body: dict[str, Any],
        text: str | None,
        calls: tuple[ToolCall, ...],
        usage: dict[str, Any],
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "content-type": "text/event-stream; charset=utf-8",
                "cache-control": "no-cache",
                "x-request-id": f"req_{next(self._ids)}",
            }
        )
        await response.prepare(request)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        envelope = self._envelope(body, "chat.completion.chunk", f"chatcmpl-{next(self._ids)}")
        for delta, finish in stream_deltas(text, calls):
            chunk = {
                **envelope,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
            if include_usage:
                chunk["usage"] = None  # as the real API: null on every chunk but the last
            await response.write(sse(chunk))
        if include_usage:
            await response.write(sse({**envelope, "choices": [], "usage": usage}))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


def _texts(message: Mapping[str, Any]) -> str:
    """The text a message carries (content, calls, ids) without JSON keys."""
    parts = [v for v in message.values() if isinstance(v, str)]
    parts += [json.dumps(message["tool_calls"])] if message.get("tool_calls") else []
    return " ".join(parts)


# Wire shapes ----------------------------------------------------------------------------


def sse(data: Mapping[str, Any]) -> bytes:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


def stream_deltas(
    text: str | None, calls: tuple[ToolCall, ...]
) -> Iterator[tuple[dict[str, Any], str | None]]:
    """The deltas of one streamed answer: the role first, then the text in pieces, then each
    call as (index, id, name, empty arguments) followed by argument fragments, then an empty
    delta with the finish reason."""
    yield (
        {
            "role": "assistant",
            "content": "" if text is not None or not calls else None,
            "refusal": None,
        },
        None,
    )
    for piece in re.findall(r"\s*\S+", text or ""):
        yield {"content": piece}, None
    for index, call in enumerate(calls):
        yield (
            {
                "tool_calls": [
                    {
                        "index": index,
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": ""},
                    }
                ]
            },
            None,
        )
        arguments = call.arguments_json()
        for start in range(0, len(arguments), ARGUMENT_PIECE):
            piece = arguments[start : start + ARGUMENT_PIECE]
            yield {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}, None
    yield {}, "tool_calls" if calls else "stop"


def error_response(
    status: int,
    message: str,
    type_: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": type_, "param": param, "code": code}},
        status=status,
        headers=headers,
    )


def check_request(body: Mapping[str, Any]) -> tuple[str, str | None, str | None] | None:
    """What the real API would reject in a chat request: (message, param, code), or None."""
    if not body.get("model"):
        return "you must provide a model parameter", None, None
    if "messages" not in body:
        return "Missing required parameter: 'messages'.", "messages", "missing_required_parameter"
    messages = body["messages"]
    if not isinstance(messages, list) or not messages:
        return (
            "Invalid 'messages': empty array. Expected an array with minimum length 1.",
            "messages",
            "empty_array",
        )
    return _check_messages(messages) or _check_tools(body.get("tools"))


def _check_messages(messages: list[Any]) -> tuple[str, str | None, str | None] | None:
    awaiting: set[str] = set()  # tool call ids still owed a `tool` message
    for n, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ROLES:
            return (
                f"Invalid value: {role!r}. Supported values are: {', '.join(ROLES)}.",
                f"messages[{n}].role",
                "invalid_value",
            )
        if role == "tool":
            if message.get("tool_call_id") not in awaiting:
                return (
                    "Invalid parameter: messages with role 'tool' must be a response to a "
                    "preceeding message with 'tool_calls'.",
                    f"messages[{n}].role",
                    None,
                )
            awaiting.discard(message["tool_call_id"])
            continue
        if awaiting:
            return (
                "An assistant message with 'tool_calls' must be followed by tool messages "
                "responding to each 'tool_call_id'. The following tool_call_ids did not have "
                f"response messages: {', '.join(sorted(awaiting))}",
                "messages",
                None,
            )
        if role == "assistant":
            awaiting = {c.get("id") for c in message.get("tool_calls") or []}
        elif not isinstance(message.get("content"), str | list):
            return (
                f"Invalid type for 'messages[{n}].content': expected a string or an array.",
                f"messages[{n}].content",
                "invalid_type",
            )
    if awaiting:
        return (
            "An assistant message with 'tool_calls' must be followed by tool messages "
            "responding to each 'tool_call_id'.",
            "messages",
            None,
        )
    return None


def _check_tools(tools: Any) -> tuple[str, str | None, str | None] | None:
    for n, tool in enumerate(tools or []):
        function = tool.get("function") if isinstance(tool, dict) else None
        if (
            not isinstance(function, dict)
            or tool.get("type") != "function"
            or not function.get("name")
        ):
            return (
                f"Invalid 'tools[{n}]': expected a function tool with a name.",
                f"tools[{n}]",
                None,
            )
    return None


# Helpers for policies -------------------------------------------------------------------


def system_text(body: Mapping[str, Any]) -> str:
    return next((m["content"] for m in body["messages"] if m["role"] == "system"), "")


def last_user_text(body: Mapping[str, Any]) -> str:
    return next((m["content"] for m in reversed(body["messages"]) if m["role"] == "user"), "")


def tool_results(body: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(tool name, parsed result) of the calls made since the client's last message, in order:
    what a policy looks at to choose its next step."""
    names: dict[str, str] = {}
    results: list[tuple[str, dict[str, Any]]] = []
    for message in body["messages"]:
        if message["role"] == "user":
            names.clear()
            results.clear()
        for call in message.get("tool_calls") or []:
            names[call["id"]] = call["function"]["name"]
        if message["role"] == "tool":
            results.append(
                (names.get(message["tool_call_id"], "?"), json.loads(message["content"]))
            )
    return results
