"""Hypothesis strategies for fuzzing what reaches the hub from outside (tests/test_fuzz_*.py).

Payloads: JSON of any shape, a provider's valid payload with a field of the wrong type,
missing or extra, awkward strings (NUL, lone surrogates, huge numbers), forms, bytes that are
not UTF-8. Requests: an `Endpoint` describes one webhook (how a body is signed, its size
limit, what a signed body may be answered), and `calls(endpoint, payloads)` draws requests
the way a provider or an attacker sends them: signed right, signed wrong or not at all, too
large, empty, with another content type or a header of raw bytes. Each `Call` carries the
answers it may get and how many messages it may hand to the hub, so a test can hold the hub
to them. `send` speaks HTTP/1.1 over a bare socket, so a header can hold any byte.
"""

from __future__ import annotations

import asyncio
import copy
import json
import tempfile
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

# Hypothesis keeps caches (and, unless a test says database=None, its examples) in a
# .hypothesis directory of the working directory: out of the work tree, in the temp dir.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "salon-hub-hypothesis")

# Payloads ---------------------------------------------------------------------------------

# Strings that have broken parsers and databases before: NUL (PostgreSQL refuses it in text),
# lone surrogates (not encodable as UTF-8), direction marks, a BOM, numbers as text.
NASTY_STRINGS = (
    "",
    " ",
    "\x00",
    "a\x00b",
    "\ud800",
    "x\udfffy",
    "\ud83d",
    "\u202e\u2066",
    "\ufeff",
    "\U0001d54f\U0001f600",
    "\r\n\t",
    "%00%ff",
    "' OR 1=1 --",
    "<script>alert(1)</script>",
    "../../etc/passwd",
    "-1",
    "1e999",
    "NaN",
    "null",
    "A" * 300,
    "Z" * 200,  # the longest id the hub keeps
    "9" * 40,
)
NASTY_NUMBERS = (0, -1, 2**31, 2**53 + 1, 2**63, -(2**63) - 1, 2**64, -(10**30), 10**400, 1e308)

# Field names the providers use, so random JSON sometimes hits a real one.
KNOWN_KEYS = (
    "update_id",
    "message",
    "message_id",
    "chat",
    "from",
    "id",
    "text",
    "date",
    "callback_query",
    "data",
    "my_chat_member",
    "event",
    "message_token",
    "sender",
    "user",
    "user_id",
    "type",
    "timestamp",
    "object",
    "entry",
    "messaging",
    "recipient",
    "mid",
    "attachments",
    "payload",
    "url",
    "is_echo",
)

nasty_texts = st.sampled_from(NASTY_STRINGS)
texts = st.one_of(
    st.text(max_size=30),
    nasty_texts,
    st.lists(st.one_of(nasty_texts, st.text(max_size=5)), max_size=4).map("".join),
)
numbers = st.one_of(
    st.integers(),
    st.sampled_from(NASTY_NUMBERS),
    st.floats(allow_nan=True, allow_infinity=True),
)
keys = st.one_of(st.sampled_from(KNOWN_KEYS), texts)
leaves = st.one_of(st.none(), st.booleans(), numbers, texts)
json_values = st.recursive(
    leaves,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=16,
)
json_objects = st.dictionaries(keys, json_values, max_size=6)
# A value of another type or an edge of its own: what "the wrong type" of a field means.
odd_values = st.one_of(
    leaves,
    st.just([]),
    st.just({}),
    st.lists(leaves, min_size=1, max_size=3),
    st.dictionaries(keys, leaves, min_size=1, max_size=3),
)

Path = tuple[Any, ...]


def _paths(doc: Any, prefix: Path = ()) -> list[Path]:
    found = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for n, value in enumerate(doc):
            found += _paths(value, (*prefix, n))
    return found


def _at(doc: Any, path: Path) -> Any:
    for step in path:
        doc = doc[step]
    return doc


@st.composite
def mutated(draw: st.DrawFn, samples: Sequence[Any]) -> Any:
    """A valid sample with one to three changes: a value of another type or an edge value, a
    field removed, a field added, a string with something nasty inside."""
    doc = copy.deepcopy(draw(st.sampled_from(samples)))
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(doc)
        # Mostly a value (a field of the wrong type or an edge), sometimes a whole object.
        leaves = [p for p in paths if not isinstance(_at(doc, p), dict | list)]
        path = draw(st.sampled_from(leaves if leaves and draw(st.integers(0, 3)) else paths))
        node = _at(doc, path)
        op = draw(st.sampled_from(("retype", "drop", "extra", "splice")))
        if op == "drop" and path:
            parent = _at(doc, path[:-1])
            del parent[path[-1]]
        elif op == "extra" and isinstance(node, dict):
            node[draw(keys)] = copy.deepcopy(draw(json_values))
        elif op == "extra" and isinstance(node, list):
            node.append(copy.deepcopy(draw(json_values)))
        elif op == "splice" and isinstance(node, str):
            at = draw(st.integers(0, len(node)))
            value = node[:at] + draw(nasty_texts) + node[at:]
            doc = _replace(doc, path, value)
        else:
            # A copy: a drawn value may be shared (st.just), and later changes would alter it.
            doc = _replace(doc, path, copy.deepcopy(draw(odd_values)))
    return doc


def _replace(doc: Any, path: Path, value: Any) -> Any:
    if not path:
        return value
    _at(doc, path[:-1])[path[-1]] = value
    return doc


Form = list[tuple[str, str]]


@st.composite
def mutated_forms(draw: st.DrawFn, samples: Sequence[Form]) -> Form:
    """A valid form with one to three changes: a field dropped, repeated, renamed, added, or
    given a nasty value."""
    form = list(draw(st.sampled_from(samples)))
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(("drop", "repeat", "rename", "extra", "value")))
        if op == "extra" or not form:
            form.insert(draw(st.integers(0, len(form))), (draw(texts), draw(texts)))
            continue
        n = draw(st.integers(0, len(form) - 1))
        name, value = form[n]
        if op == "drop":
            del form[n]
        elif op == "repeat":
            form.insert(n, (name, draw(texts)))
        elif op == "rename":
            form[n] = (draw(texts), value)
        else:
            form[n] = (name, draw(st.one_of(texts, numbers.map(str))))
    return form


def json_body(value: Any, *, ascii_only: bool = True) -> bytes:
    """JSON as a provider sends it; a lone surrogate goes out as a \\uD800 escape, or (not
    ASCII-only) as the bytes UTF-8 forbids."""
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def form_body(form: Form) -> bytes:
    """application/x-www-form-urlencoded; a lone surrogate becomes bytes UTF-8 forbids."""
    return "&".join(
        quote(name.encode("utf-8", "surrogatepass"), safe="")
        + "="
        + quote(value.encode("utf-8", "surrogatepass"), safe="")
        for name, value in form
    ).encode("ascii")


# Bodies that are not even text: a stray continuation byte, an overlong form, a surrogate
# encoded, a truncated sequence, each inside something JSON- or form-like.
BAD_UTF8 = (b"\xff", b"\xc3\x28", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82", b"\x80")
not_utf8 = st.tuples(
    st.sampled_from((b'{"text": "', b"Body=", b"", b'{"event": "message", "x": ')),
    st.sampled_from(BAD_UTF8),
    st.binary(max_size=20),
).map(lambda parts: parts[0] + parts[1] + parts[2])

# Header values as raw bytes: anything but the line breaks that would end the header.
header_bytes = st.binary(max_size=80).map(
    lambda b: b.replace(b"\r", b"").replace(b"\n", b"").strip(b" \t")
)
CONTENT_TYPES = (
    b"",
    b"text/plain",
    b"application/json",
    b"application/json; charset=latin-1",
    b"application/x-www-form-urlencoded",
    b"multipart/form-data; boundary=x",
    b"application/octet-stream",
    b"text/xml",
    b"garbage/;;;=",
)
content_types = st.one_of(st.sampled_from(CONTENT_TYPES), header_bytes)


# Requests ---------------------------------------------------------------------------------

Headers = tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True)
class Call:
    """One request and what may come of it."""

    what: str  # the kind of input, for a failure's report
    method: str
    target: str  # the path and query string, as on the request line
    headers: Headers
    body: bytes
    allowed: frozenset[int]  # the answers it may get
    may_publish: int = 0  # inbound messages it may hand to the hub (only with a 2xx)
    chunked: bool = False  # sent without a Content-Length

    def __repr__(self) -> str:  # what hypothesis shows for a failing example
        body = self.body if len(self.body) <= 300 else self.body[:300] + b"..."
        return (
            f"Call({self.what}, {self.method} {self.target}, headers={self.headers!r}, "
            f"body[{len(self.body)}]={body!r}, allowed={sorted(self.allowed)})"
        )


@dataclass(frozen=True)
class Endpoint:
    """One webhook: where it is, how a body is signed and what a signed body may get."""

    path: str
    limit: int  # the largest body it reads
    content_type: bytes
    # The headers that sign `body` sent to `target`; `wrong` draws headers that don't.
    sign: Callable[[bytes, str], Headers]
    wrong: st.SearchStrategy[Headers]
    encode: Callable[[Any], bytes] = json_body
    # The answers to a signed body of any shape: acknowledged (2xx) or refused (4xx).
    signed_answers: frozenset[int] = frozenset({200, 400})
    # How many messages a signed body may carry (the rest of the hub's invariants use it).
    carries: Callable[[bytes], int] = lambda body: 1
    # The answer to a signed body of another content type (None: read as any other).
    wrong_type: frozenset[int] | None = None
    unsigned: frozenset[int] = frozenset({403})
    extra_paths: tuple[tuple[str, frozenset[int]], ...] = field(default=())


def signed(ep: Endpoint, payload: Any, answer: int = 200, headers: Headers | None = None) -> Call:
    """A body signed right (or with `headers` in place of the signature), to be answered
    `answer`: an input found once, kept as an example that runs every time."""
    body = payload if isinstance(payload, bytes) else ep.encode(payload)
    signature = ep.sign(body, ep.path) if headers is None else headers
    may = ep.carries(body) if 200 <= answer < 300 else 0
    ctype = ((b"Content-Type", ep.content_type),)
    return Call("pinned", "POST", ep.path, ctype + signature, body, frozenset({answer}), may)


# About half the requests are signed right: only those reach the parsing behind the check.
KINDS = ("signed",) * 7 + (
    "unsigned",
    "wrongly signed",
    "raw signature header",
    "not UTF-8",
    "empty",
    "nested too deep",
    "content type",
    "too large",
    "too large, chunked",
    "other path",
    "other method",
)


@st.composite
def calls(draw: st.DrawFn, ep: Endpoint, payloads: st.SearchStrategy[Any]) -> Call:
    """A request to `ep` of any kind (KINDS), its body drawn from `payloads` where it has one
    (a value `ep.encode` turns into a body, or the body's bytes)."""
    kind = draw(st.sampled_from(KINDS))
    ctype = ((b"Content-Type", ep.content_type),)
    if kind in ("signed", "unsigned", "wrongly signed", "raw signature header", "content type"):
        payload = draw(payloads)
        if isinstance(payload, bytes):
            body = payload
        elif ep.encode is json_body:
            body = json_body(payload, ascii_only=draw(st.booleans()))
        else:
            body = ep.encode(payload)
        signed = ep.sign(body, ep.path)
        if kind == "signed":
            return Call(
                kind, "POST", ep.path, ctype + signed, body, ep.signed_answers, ep.carries(body)
            )
        if kind == "unsigned":
            return Call(kind, "POST", ep.path, ctype, body, ep.unsigned)
        if kind == "wrongly signed":
            # A value the HTTP parser refuses (a control character) is a 400 before the hub.
            headers = ctype + draw(ep.wrong)
            return Call(kind, "POST", ep.path, headers, body, ep.unsigned | {400})
        if kind == "raw signature header":
            name = signed[0][0] if signed else b"X-Signature"
            raw = ((name, draw(header_bytes)),)
            # A value the HTTP parser refuses is a 400 before the hub sees it.
            return Call(kind, "POST", ep.path, ctype + raw, body, ep.unsigned | {400})
        other = draw(content_types.filter(lambda c: _mime(c) != ep.content_type))
        answers = ep.wrong_type if ep.wrong_type is not None else ep.signed_answers
        may = 0 if ep.wrong_type is not None else ep.carries(body)
        headers = ((b"Content-Type", other), *signed) if other else signed
        return Call(kind, "POST", ep.path, headers, body, answers | {400}, may)
    if kind == "not UTF-8":
        body = draw(not_utf8)
        return Call(kind, "POST", ep.path, ctype + ep.sign(body, ep.path), body, frozenset({400}))
    if kind == "empty":
        return Call(kind, "POST", ep.path, ctype + ep.sign(b"", ep.path), b"", frozenset({400}))
    if kind == "nested too deep":
        body = _nested(draw(st.integers(500, min(100_000, ep.limit // 2))))
        return Call(kind, "POST", ep.path, ctype + ep.sign(body, ep.path), body, frozenset({400}))
    if kind.startswith("too large"):
        extra = draw(st.integers(1, 64 * 1024))
        filler = draw(st.sampled_from((b" ", b"a", b"\xff")))
        body = (b"Body=" if ep.encode is form_body else b"") + filler * (ep.limit + extra)
        chunked = kind.endswith("chunked")
        return Call(
            kind,
            "POST",
            ep.path,
            ctype + ep.sign(body, ep.path),
            body,
            frozenset({413}),
            0,
            chunked,
        )
    if kind == "other path":
        path, _, query = ep.path.partition("?")
        paths = (*ep.extra_paths, (f"{path}/x?{query}", frozenset({404, 405})))
        path, answers = draw(st.sampled_from(paths))
        body = json_body(draw(json_values))
        return Call(kind, "POST", path, ctype + ep.sign(body, path), body, answers)
    method = draw(st.sampled_from(("PUT", "DELETE", "PATCH")))
    return Call(kind, method, ep.path, ctype, b"{}", frozenset({405}))


def _mime(content_type: bytes) -> bytes:
    return content_type.split(b";")[0].strip().lower()


# Web chat frames --------------------------------------------------------------------------

MAX_FRAME = 64 * 1024  # the socket's max_msg_size: a longer frame closes it (1009)
CHAT_SAMPLES = (
    {"type": "message", "text": "Hi! Can I book a manicure?"},
    {"type": "message", "text": "Добрий день", "client_id": "abcdef123456"},
)


@dataclass(frozen=True)
class Frame:
    what: str
    data: bytes
    binary: bool = False  # a binary frame; else a text frame (its bytes may not be UTF-8)

    def __repr__(self) -> str:
        data = self.data if len(self.data) <= 300 else self.data[:300] + b"..."
        return f"Frame({self.what}, {len(self.data)} bytes: {data!r})"


def _frame(what: str) -> Callable[[Any], Frame]:
    return lambda value: Frame(what, value if isinstance(value, bytes) else json_body(value))


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


chat_frames = st.one_of(
    texts.map(lambda t: Frame("text", t.encode("utf-8", "replace"))),
    json_values.map(_frame("random JSON")),
    mutated(CHAT_SAMPLES).map(_frame("message-like")),
    mutated(CHAT_SAMPLES).map(_frame("message-like")),
    st.sampled_from(CHAT_SAMPLES).map(_frame("message")),
    st.integers(MAX_FRAME - 100, MAX_FRAME + 4096).map(
        lambda n: Frame("huge", json_body({"type": "message", "text": "x" * n}))
    ),
    st.binary(max_size=100).map(lambda b: Frame("binary", b, binary=True)),
    not_utf8.map(lambda b: Frame("not UTF-8", b)),
    st.integers(500, 30_000).map(lambda n: Frame("deep", _nested(n))),
)


# Sending ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


async def send(base_url: str, call: Call, timeout: float = 15.0) -> Answer:
    """The request over a socket of its own (`Connection: close`), bytes exactly as drawn."""
    url = urlsplit(base_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    reader, writer = await asyncio.open_connection(host, port)
    try:
        head = [
            f"{call.method} {call.target} HTTP/1.1".encode(),
            f"Host: {host}:{port}".encode(),
            b"Connection: close",
        ]
        head += [name + b": " + value for name, value in call.headers]
        if call.chunked:
            head.append(b"Transfer-Encoding: chunked")
            step = 64 * 1024
            pieces = [call.body[n : n + step] for n in range(0, len(call.body), step)]
            payload = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
        else:
            head.append(b"Content-Length: %d" % len(call.body))
            payload = call.body
        writer.write(b"\r\n".join(head) + b"\r\n\r\n" + payload)
        return await asyncio.wait_for(_answer(reader), timeout)
    finally:
        writer.close()
        with suppress(ConnectionError):
            await writer.wait_closed()


async def _answer(reader: asyncio.StreamReader) -> Answer:
    status_line = await reader.readline()
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise AssertionError(f"no HTTP answer, only {status_line!r}")
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = b""
    # The server may close with part of a large request unread: the reset can cut the
    # answer's body, never its status line (already read).
    with suppress(ConnectionError):
        body = await reader.read()
    return Answer(int(parts[1]), headers, body)
