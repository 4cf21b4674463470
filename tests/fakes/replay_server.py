"""A replay server: answers the hub's chat requests from recordings of a model.

Recordings are JSON lines in the shape of `../shared/fixtures/llm/real-model-transcripts.jsonl`
(a real Qwen2.5-Coder-1.5B behind llama.cpp): `{"request": {...}, "response": {...},
"status": 200}`. A request is matched by its last client (`user`) message and its round —
how many assistant messages follow that message, i.e. which model call of the turn it is —
so the hub's own, longer system prompt still finds a recording made with a shorter one. Where
several recordings share a key, the one made with the requested model wins, else the first.
A request nothing matches gets a harmless plain answer (and is counted in `misses`).

    async with ReplayServer.from_files(paths) as server:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="test")

Or as a process for `hub eval --brain llm` (OPENAI_BASE_URL=http://127.0.0.1:PORT/v1):

    python -m tests.fakes.replay_server --port 8765 [FILE.jsonl ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent.parent
FIXTURE = ROOT.parent / "shared" / "fixtures" / "llm" / "real-model-transcripts.jsonl"
RECORDINGS = Path(__file__).resolve().parent / "recordings"
# What a request with no recording is answered: a model's plain small talk, by alphabet.
MISS_ANSWERS = {
    "uk": "Вибачте, уточніть, будь ласка, що саме вас цікавить?",
    "ru": "Извините, уточните, пожалуйста, что именно вас интересует?",
    "en": "Sorry, could you tell me a little more about what you need?",
}

Key = tuple[str, int]


@dataclass(frozen=True)
class Recording:
    key: Key
    model: str | None
    response: Any
    status: int = 200
    source: str = ""


def key_of(request: Mapping[str, Any]) -> Key:
    """The last client message (whitespace folded) and the round after it."""
    messages = request.get("messages") or []
    last = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    text = str(messages[last].get("content") or "") if last >= 0 else ""
    after = sum(1 for m in messages[last + 1 :] if m.get("role") == "assistant")
    return " ".join(text.split()).casefold(), after


def load(paths: Iterable[Path]) -> list[Recording]:
    found = []
    for path in paths:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            row = json.loads(line)
            request = row["request"]
            found.append(
                Recording(
                    key_of(request),
                    request.get("model"),
                    row["response"],
                    int(row.get("status", 200)),
                    f"{path.name}:{n}",
                )
            )
    return found


def default_files() -> list[Path]:
    """The real model's fixture (when the shared checkout is there) and our own."""
    files = [FIXTURE] if FIXTURE.is_file() else []
    return files + sorted(RECORDINGS.glob("*.jsonl"))


@dataclass
class ReplayServer:
    recordings: list[Recording]
    port: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    hits: list[str] = field(default_factory=list)  # the source of each answer given
    misses: list[Key] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._runner: web.AppRunner | None = None
        self._index: dict[Key, list[Recording]] = {}
        for recording in self.recordings:
            self._index.setdefault(recording.key, []).append(recording)

    @classmethod
    def from_files(cls, paths: Iterable[Path] | None = None, port: int = 0) -> ReplayServer:
        return cls(load(default_files() if paths is None else paths), port=port)

    async def __aenter__(self) -> ReplayServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._completions)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def find(self, request: Mapping[str, Any]) -> Recording | None:
        candidates = self._index.get(key_of(request), [])
        model = request.get("model")
        return next((r for r in candidates if r.model == model), None) or next(
            iter(candidates), None
        )

    async def _completions(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return web.json_response({"error": {"message": "bad JSON"}}, status=400)
        self.requests.append(body)
        found = self.find(body)
        if found is None:
            self.misses.append(key_of(body))
            return web.json_response(miss_answer(body))
        self.hits.append(found.source)
        return web.json_response(found.response, status=found.status)


def miss_answer(request: Mapping[str, Any]) -> dict[str, Any]:
    text, _ = key_of(request)
    if re.search(r"[іїєґ]", text):
        language = "uk"
    elif re.search(r"[а-я]", text):
        language = "ru"
    else:
        language = "en"
    return completion(MISS_ANSWERS[language], str(request.get("model") or "replay"))


def completion(text: str, model: str) -> dict[str, Any]:
    """A chat.completion as llama.cpp's server sends one."""
    return {
        "id": "chatcmpl-replay",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": text},
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


async def _serve(port: int, files: list[Path]) -> None:
    server = ReplayServer.from_files(files or None, port=port)
    await server.start()
    print(f"replaying {len(server.recordings)} recordings at {server.base_url}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("files", nargs="*", type=Path, help="default: the fixture and ours")
    args = parser.parse_args()
    try:
        asyncio.run(_serve(args.port, args.files))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
