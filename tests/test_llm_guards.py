"""The guards around a small model: tool calls written as text, what may reach a client,
the hand-off before the model, writes held for a yes, the token cap, and what `hub eval`
reports of it (retries, timeouts, dialogues, the unseen part)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bots.llm_writes import find_contact
from bots.reply_guard import amounts, clean, match_service, unknown_prices
from bots.tool_text import TextCall, parse_tool_calls
from hub.eval.figures import Prices, failed_check, outcome_json, totals
from hub.eval.runner import evaluate
from prompts import load_json
from tests.fakes.openai_server import FakeOpenAI, Text
from tests.salon import build_salon
from tests.test_llm_brain import NOW, appointments, brain_for, open_chat

REPLIES = load_json("llm/replies.json")
TOOLS = {"list_services", "find_slots", "book", "my_appointments", "handoff"}


@pytest.fixture(autouse=True)
def estimated_tokens() -> object:
    from bots import tokens

    tokens.set_encoding(None)
    yield
    tokens.reset_encoding()


@pytest.fixture
async def fake() -> object:
    async with FakeOpenAI() as server:
        yield server


# 1. Tool calls written as text -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "calls"),
    [
        (
            '```json\n{"name": "list_services", "arguments": {"category": "hair"}}\n```',
            [TextCall("list_services", {"category": "hair"})],
        ),
        (
            '{"name": "book", "parameters": "{\\"service_id\\": 2}"}',
            [TextCall("book", {"service_id": 2})],
        ),
        (
            '<tool_call>\n{"name": "find_slots", "arguments": {"service_id": 1}}\n</tool_call>',
            [TextCall("find_slots", {"service_id": 1})],
        ),
        (
            '<tools>\n{"name": "my_appointments", "arguments": {}}\n</tools>\n```',
            [TextCall("my_appointments", {})],
        ),
        ('<function=handoff>{"reason": "x"}</function>', [TextCall("handoff", {"reason": "x"})]),
        (
            "<tool_call><function=find_slots><parameter=service_id>3</parameter>"
            "<parameter=after>15:00</parameter></function></tool_call>",
            [TextCall("find_slots", {"service_id": 3, "after": "15:00"})],
        ),
        (
            '[TOOL_CALLS] [{"name": "list_services", "arguments": {}}, '
            '{"name": "my_appointments", "arguments": {}}]',
            [TextCall("list_services", {}), TextCall("my_appointments", {})],
        ),
        ('[TOOL_CALLS]handoff[ARGS]{"reason": "y"}', [TextCall("handoff", {"reason": "y"})]),
        (
            '<|python_tag|>{"name": "my_appointments", "parameters": {}}',
            [TextCall("my_appointments", {})],
        ),
        (
            '{"tool_calls": [{"type": "function", "function": {"name": "book", '
            '"arguments": "{\\"service_id\\": 1}"}}]}',
            [TextCall("book", {"service_id": 1})],
        ),
        ('{"name": "handoff"}', [TextCall("handoff", {})]),  # a known tool, no arguments
        ('{"name": "Olena"}', []),  # a name, not a call
        ("Tomorrow at 10:00 is free. {Olena}", []),
        ("", []),
    ],
)
def test_text_tool_calls_in_every_documented_shape(text: str, calls: list[TextCall]) -> None:
    assert parse_tool_calls(text, known=TOOLS) == calls


def test_arguments_that_are_not_json_are_kept_for_the_tool_to_refuse() -> None:
    [call] = parse_tool_calls('{"name": "book", "arguments": "service 2 tomorrow"}')
    assert call.arguments == "service 2 tomorrow"


@given(st.text(max_size=400))
def test_the_parser_never_raises(text: str) -> None:
    for call in parse_tool_calls(text, known=TOOLS):
        assert isinstance(call.name, str) and call.name
        assert isinstance(call.arguments, dict | str)


@given(
    st.sampled_from(sorted(TOOLS)),
    st.dictionaries(st.sampled_from(["service_id", "after", "reason"]), st.integers(1, 99)),
    st.sampled_from(["```json\n{}\n```", "<tool_call>{}</tool_call>", "{}", "<tools>{}</tools>"]),
    st.text(alphabet="abc .,!", max_size=30),
)
def test_a_written_call_is_found_whatever_is_around_it(
    name: str, arguments: dict[str, int], frame: str, around: str
) -> None:
    body = json.dumps({"name": name, "arguments": arguments})
    text = around + frame.replace("{}", body) + around
    assert parse_tool_calls(text, known=TOOLS) == [TextCall(name, arguments)]


# 2. What may reach a client ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "left"),
    [
        ("[automatic message] Вітаю! Чим допомогти?", "Вітаю! Чим допомогти?"),
        ("[confirm] Your appointment is confirmed.", "Your appointment is confirmed."),
        ("[reminder of appointment 1]", ""),
        ("[administrator]", ""),
        ('```json\n{"name": "book", "arguments": {}}\n```', ""),
        (
            '<tools>\n{"name": "x", "arguments": {}}\n</tools>\n\nThe cost is 100 UAH.',
            "The cost is 100 UAH.",
        ),
        ('Your bookings: {"appointments": [{"id": 1}]}', "Your bookings"),
        ('{"name": "book", "arguments": {"service_id"', ""),
    ],
)
def test_markers_calls_json_and_fences_are_taken_out(raw: str, left: str) -> None:
    cleaned = clean(raw)
    assert cleaned.text == left
    assert cleaned.empty == (left == "")


def test_prices_are_read_in_every_form() -> None:
    assert amounts("750 грн, 1 200 UAH, ₴450 and 3,500 uah") == [750, 1200, 3500, 450]
    assert unknown_prices("Balayage is 45 UAH", {3500, 750}) == [45]
    names = {1: ["Ламінування вій", "Lash lift"], 2: ["Ламінування брів", "Brow lamination"]}
    assert match_service(["How much is a lash lift?"], names) == 1
    assert match_service(["ламінування"], names) is None  # both fit equally


def test_a_phone_with_a_name_is_found() -> None:
    intros, yes = REPLIES["name_intros"], REPLIES["yes_words"]
    assert find_contact("Ірина, 067 123 45 67", intros, yes).name == "Ірина"  # type: ignore[union-attr]
    found = find_contact("Maria +380501112233", intros, yes)
    assert found is not None and found.phone == "+380501112233" and found.name == "Maria"
    assert find_contact("мене звати оля, 0671234567", intros, yes).name == "Оля"  # type: ignore[union-attr]
    assert find_contact("at 15:00 on 02.03", intros, yes) is None


async def test_a_reply_of_only_markers_is_replaced_and_twice_hands_off(
    sessions, fake: FakeOpenAI
) -> None:
    """The fixture's model answered a complaint with "[reminder of appointment 1]"."""
    salon = await build_salon(sessions)
    chat = await open_chat(sessions, salon.client)
    brain = brain_for(sessions, fake)
    fake.reply("[reminder of appointment 1]")
    [first] = await brain.respond(await chat.client_says("Ну і що далі?"))
    assert first.text == REPLIES["uk"]["unclear"] and not first.handoff
    fake.reply('```json\n{"oops": true}\n```')
    [second] = await brain.respond(await chat.client_says("Ну?"))
    assert second.handoff and "twice" in second.handoff_reason


async def test_an_invented_price_is_replaced_by_the_price_list(sessions, fake: FakeOpenAI) -> None:
    salon = await build_salon(sessions)
    chat = await open_chat(sessions, salon.client)
    fake.reply("Sure! A haircut is 45 UAH. Would you like to book?")
    [reply] = await brain_for(sessions, fake).respond(
        await chat.client_says("How much is a haircut?")
    )
    assert "45 UAH" not in reply.text and "Would you like to book?" in reply.text
    async with sessions() as session:
        from crm_store.models import Service

        haircut = await session.get(Service, salon.haircut)
    assert f"{haircut.price_minor // 100} UAH" in reply.text  # type: ignore[union-attr]


async def test_uah_is_written_as_hryvnias_in_ukrainian(sessions, fake: FakeOpenAI) -> None:
    salon = await build_salon(sessions)
    chat = await open_chat(sessions, salon.client)
    async with sessions() as session:
        from crm_store.models import Service

        price = (await session.get(Service, salon.manicure)).price_minor // 100  # type: ignore[union-attr]
    fake.reply(f"Манікюр коштує {price} UAH.")
    [reply] = await brain_for(sessions, fake).respond(await chat.client_says("Скільки манікюр?"))
    assert reply.text == f"Манікюр коштує {price} грн."


# 3. The safety net ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "Можна поговорити з живою людиною?",  # the fixture's model said "no"
        "Your stylist burned my scalp last week. I'm going to sue the salon.",
        "Can I get gel nails while pregnant?",
    ],
)
async def test_person_complaint_and_medical_go_to_staff_without_the_model(
    sessions, fake: FakeOpenAI, text: str
) -> None:
    salon = await build_salon(sessions)
    chat = await open_chat(sessions, salon.client)
    fake.reply("Ні, мені недостатньо інформації для цього.")
    [reply] = await brain_for(sessions, fake).respond(await chat.client_says(text))
    assert reply.handoff and fake.requests == []
    assert reply.text in {REPLIES[lang]["handoff"] for lang in ("uk", "en", "ru")}


# 4. Writes held for a yes ---------------------------------------------------------------------


async def test_a_book_is_not_run_until_yes_and_a_no_drops_it(sessions, fake: FakeOpenAI) -> None:
    salon = await build_salon(sessions)
    chat = await open_chat(sessions, salon.client)
    brain = brain_for(sessions, fake)
    start = {"service_id": salon.manicure, "master_id": salon.olena, "start": "2027-03-02T10:00"}
    fake.call_tool("book", start)
    [summary] = await brain.respond(await chat.client_says("Is Tuesday at 10 free for a manicure?"))
    assert await appointments(sessions) == []
    assert summary.quick_replies == ["Yes", "No"] and "Tue 02.03 at 10:00" in summary.text
    fake.reply("OK, I won't book it. Anything else?")
    [after] = await brain.respond(await chat.client_says("no, just asking"))
    assert after.text == "OK, I won't book it. Anything else?"
    fake.reply("Sure.")
    await brain.respond(await chat.client_says("yes"))  # the pending booking is gone
    assert await appointments(sessions) == []


async def test_a_time_that_is_not_free_goes_back_to_the_model(sessions, fake: FakeOpenAI) -> None:
    salon = await build_salon(sessions)
    chat = await open_chat(sessions, salon.client)
    fake.call_tool("book", {"service_id": salon.manicure, "start": "2027-03-02T03:00"})
    fake.reply("That time is not free; 10:00 is.")
    [reply] = await brain_for(sessions, fake).respond(await chat.client_says("Tuesday 3 am"))
    assert reply.text == "That time is not free; 10:00 is."
    [result] = [m for m in fake.requests[1]["messages"] if m["role"] == "tool"]
    assert "is not free" in json.loads(result["content"])["error"]


async def test_a_stranger_on_the_web_chat_books_by_giving_a_name_and_phone(
    sessions, fake: FakeOpenAI
) -> None:
    from tests.test_llm_brain import stranger_turn

    await build_salon(sessions)
    salon_ids = await build_ids(sessions)
    turn = await stranger_turn(sessions, "visitor-1", "Manicure on Tuesday at 10 please")
    fake.call_tool("book", {"service_id": salon_ids, "start": "2027-03-02T10:00"})
    brain = brain_for(sessions, fake)
    [summary] = await brain.respond(turn)
    assert "name and phone number" in summary.text and summary.quick_replies == []
    contact = turn.model_copy(update={"message_id": "m2", "text": "Maria +380501112233"})
    [done] = await brain.respond(contact)
    [booked] = await appointments(sessions)
    assert done.text.startswith("Done!") and booked.client_id == turn.client_id
    async with sessions() as session:
        from crm_store.models import Client

        card = await session.get(Client, turn.client_id)
    assert card is not None and card.phone == "+380501112233" and card.name == "Maria"


async def build_ids(sessions) -> int:
    from sqlmodel import select

    from crm_store.models import Service

    async with sessions() as session:
        rows = (await session.exec(select(Service))).all()
    return next(s.id for s in rows if "anicure" in s.name_en)  # type: ignore[return-value]


# 6. The token cap ------------------------------------------------------------------------------


async def test_every_request_carries_max_tokens(sessions, fake: FakeOpenAI) -> None:
    salon = await build_salon(sessions)
    chat = await open_chat(sessions, salon.client)
    fake.call_tool("list_services").then(Text("We do nails and hair."))
    await brain_for(sessions, fake, max_tokens=123).respond(
        await chat.client_says("What is there?")
    )
    assert [r["max_tokens"] for r in fake.requests] == [123, 123]


def test_the_setting_reaches_the_brain() -> None:
    from hub.brains import build_responder
    from hub.config import Settings

    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, openai_api_key="sk-x", hub_bot="llm", hub_llm_max_tokens=77
    )
    assert Settings(_env_file=None).hub_llm_max_tokens == 400  # type: ignore[call-arg]
    brain = build_responder(settings, None, lambda: NOW)  # type: ignore[arg-type]
    assert brain.max_tokens == 77  # type: ignore[attr-defined]


# 7-8. What `hub eval` reports ----------------------------------------------------------------


async def test_eval_reports_retries_timeouts_dialogues_and_the_unseen_part(
    tmp_path: Path, fake: FakeOpenAI
) -> None:
    from bots.llm import LlmBrain
    from bots.tools import Tools

    (tmp_path / "unseen").mkdir()
    (tmp_path / "seen-hello.toml").write_text('language = "en"\nturns = ["hello"]\n', "utf-8")
    (tmp_path / "unseen" / "hello.toml").write_text(
        'language = "en"\nturns = ["hi"]\n[[expect.booked]]\nservice = "manicure"\n', "utf-8"
    )
    fake.policy = lambda body: Text("Hello! How can I help?")
    fake.fail(500, retry_after_ms=1)  # the first request is retried once

    def make(sessions, clock):
        tools = Tools(sessions, clock=clock)
        return LlmBrain(tools, sessions, fake.client(max_retries=1), "m", clock)

    outcomes = await evaluate(tmp_path, make)
    report = totals(outcomes, "llm", Prices())
    assert report["retries"] == 1 and report["timeouts"] == 0
    assert report["seen"]["scenarios"] == 1 and report["seen"]["completion"] == 1.0
    assert report["unseen"]["scenarios"] == 1 and report["unseen"]["completion"] == 0.0
    assert report["unseen"]["failures_by_category"] == {
        "booked": {"scenarios": 1, "failed": 1, "checks": {"not booked": 1}}
    }
    by_name = {o.scenario.name: outcome_json(o) for o in outcomes}
    assert set(by_name) == {"seen-hello", "unseen/hello"}
    assert by_name["unseen/hello"]["part"] == "unseen"
    [turn] = (
        by_name["seen-hello"]["dialogue"]
        if by_name["seen-hello"]["retries"]
        else by_name["unseen/hello"]["dialogue"]
    )
    assert turn["replies"][0]["text"] == "Hello! How can I help?"
    assert turn["retries"] == 1 and turn["client"] in {"hello", "hi"}


def test_failures_are_named_by_the_check_that_failed() -> None:
    assert failed_check("booked: expected x; got nothing") == "not booked"
    assert failed_check("unexpected hand-off on turn 2 (x)") == "needless hand-off"
    assert failed_check("hand-off: expected, but …") == "missed hand-off"
    assert failed_check("turn 1: the brain raised KeyError: x") == "crash"
    assert failed_check("forbidden change of another client's appointment: …") == (
        "other client touched"
    )
