"""The offline brain: the AI administrator by rules, in uk/en/ru, with no model and no key.

Each turn reads what the client said (bots/nlu.py), looks at where the dialogue stood (the
state saved per conversation, bots/state.py) and acts through the same tools as the LLM
brain (bots/tools.py). Booking is slot filling over as many turns as it takes: service,
master or anyone, day, time; then it offers real free times as quick replies and books the
one the client picks. The words it says are templates in prompts/offline/replies.json.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from functools import cached_property
from typing import Any
from zoneinfo import ZoneInfo

import cyrtranslit
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from bots import locale_text, morph, nlu, translit
from bots.base import Reply, Turn
from bots.catalog_cache import CatalogCache
from bots.state import Memory, recall, remember
from bots.tools import ToolContext, ToolResult, Tools
from crm_store.business import get_business
from crm_store.catalog import list_masters, list_services
from crm_store.contacts import normalize_phone
from prompts import load_json

log = logging.getLogger(__name__)

MAX_READ = 2000  # characters of a message read: a 10 kB paste is not a booking request
OFFER = 6  # times offered at once: enough to choose from, few enough for buttons
SEARCH = 60  # free times fetched to pick the offer from
SPREAD = timedelta(minutes=45)  # offered times of one day at least this far apart
AROUND_DAYS = 6  # how far back from a full day earlier alternatives are looked for
AMBIGUOUS = 6.0  # services scoring within this of the best are asked about
WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*")
PHONE = re.compile(r"(?<![\d+])\+?\d[\d\s().-]{7,16}\d(?!\d)")
# Said around a phone number without asking anything else.
SMALL_TALK = frozenset({"greeting", "thanks", "yes", "no"})
# A reminder's quick replies (prompts/notices/reminder.json), which are also intents.
REMINDER_ANSWERS = ("confirm", "cancel", "reschedule")
# Asking for something else: not an answer to a reminder.
NOT_AN_ANSWER = frozenset({"book", "my_appointments", "prices"})
# Channels that vouch for neither a name nor a phone: a booking made there without both
# shows "—" in the calendar and nobody can be called, so the bot asks first.
WEAK_IDENTITY = frozenset({"webchat", "email"})


@dataclass
class Catalog:
    """What the brain needs to understand names; read-only, shared by every turn until the
    catalogue changes (bots/catalog_cache.py)."""

    services: dict[int, dict[str, Any]]
    masters: dict[int, str]
    business: dict[str, Any]
    offers: dict[int, frozenset[int]] = field(default_factory=dict)  # master → service ids
    prices: dict[tuple[int, int], float] = field(default_factory=dict)  # (master, service)
    durations: dict[tuple[int, int], int] = field(default_factory=dict)  # (master, service)

    def named_services(self) -> list[nlu.Named]:
        return self._named[0]

    def named_masters(self) -> list[nlu.Named]:
        return self._named[1]

    @cached_property
    def _named(self) -> tuple[list[nlu.Named], list[nlu.Named]]:
        return (
            [nlu.Named(i, s["names"]) for i, s in self.services.items()],
            [nlu.Named(i, (name, *name.split())) for i, name in self.masters.items()],
        )


@dataclass
class _Turn:
    """One turn in progress: the client's words, the memory, what the bot will say."""

    turn: Turn
    memory: Memory
    catalog: Catalog
    lang: nlu.Language
    today: date
    replies: list[Reply] = field(default_factory=list)
    gave_contact: bool = False  # this message brought the name or phone the bot asked for

    @property
    def state(self) -> dict[str, Any]:
        return self.memory.state

    @property
    def text(self) -> str:
        return self.turn.text.strip()


class OfflineBrain:
    def __init__(
        self,
        tools: Tools,
        sessions: async_sessionmaker[AsyncSession],
        *,
        clock: Callable[[], datetime],
        timezone: str = "Europe/Kyiv",
        currency: str = "UAH",
    ) -> None:
        self.tools = tools
        self.sessions = sessions
        self.clock = clock
        self.timezone = timezone
        self.currency = currency
        self._catalogs = CatalogCache(sessions, self._catalog)

    async def respond(self, turn: Turn) -> list[Reply]:
        memory = await recall(self.sessions, turn.conversation_id)
        catalog = await self._catalogs.get()
        lang = self._language(turn, memory)
        read = self._latin_reading(turn.text[:MAX_READ], catalog)
        if read is not None:
            # "pryvit, mozhna na manikur zavtra?": understood, and answered, in Ukrainian.
            cyrillic, lang = read
            turn = turn.model_copy(update={"text": cyrillic})
        t = _Turn(
            turn,
            memory,
            catalog,
            lang,
            self.clock().astimezone(catalog.business["tz"]).date(),
        )
        memory.state["lang"] = t.lang
        try:
            await self._respond(t)
        except Exception:
            log.exception("offline brain failed on conversation %s", turn.conversation_id)
            t.replies = [self._handoff(t, "error", "the offline brain failed")]
        if any(r.handoff for r in t.replies):
            memory.state = {"lang": t.lang}
            memory.failures = 0
        await remember(self.sessions, memory)
        return t.replies

    def _latin_reading(self, text: str, catalog: Catalog) -> tuple[str, nlu.Language] | None:
        """Ukrainian or Russian typed in Latin letters, in Cyrillic, when reading it so makes
        more sense of the message than reading it as English: "I want to talk to a real
        person" stays English even where each word could be read as Ukrainian."""
        today = self.clock().date()

        def sense(said: str) -> int:
            return (
                len(nlu.detect_intents(said))
                + bool(nlu.match_services(said, catalog.named_services()))
                + bool(nlu.parse_day(said, today))
                + (nlu.parse_ordinal(said) is not None)
                + (nlu.parse_time(said) is not None)
            )

        read = translit.cyrillic_reading(text)
        if read is None:
            # The dictionaries found no reading ("v subbotu v 11"): cyrtranslit's Russian
            # letter-by-letter one, tried only for Latin text that makes no sense as English,
            # so an ordinary English message pays for nothing more.
            if not _LATIN_ONLY.fullmatch(text.strip() or "-") or sense(text):
                return None
            read = (cyrtranslit.to_cyrillic(text, "ru"), "ru")
        return read if sense(read[0]) > sense(text) else None

    # What the client wants ----------------------------------------------------------------

    async def _respond(self, t: _Turn) -> None:
        intents = nlu.detect_intents(t.text)
        if "sensitive" in intents:
            t.replies.append(self._handoff(t, "handoff_sensitive", "medical or legal question"))
            return
        if "complaint" in intents:
            t.replies.append(self._handoff(t, "handoff_complaint", "the client complains"))
            return
        if "human" in intents:
            t.replies.append(self._handoff(t, "handoff", "the client asked for a person"))
            return
        confirming = t.state.get("awaiting") == "confirm"
        phone = find_phone(t.text)
        name = nlu.parse_name(t.text, expected=confirming and bool(t.state.get("need")))
        if phone is not None or name is not None:
            # "Це Оксана, мій номер 067…" or "my number is …, what do I have booked?": the
            # details join the card first, so the rest of the message is answered for them.
            # Asked for with a booking's summary, they are the client's yes to it.
            saved = await self._save_contact(t, phone, name, quiet=confirming)
            if confirming and saved:
                t.gave_contact = True
            elif not intents - SMALL_TALK and not confirming and not self._asks_more(t):
                t.memory.failures = 0
                return
        handled = (
            await self._reminder_answer(t, intents)
            or await self._awaited(t, intents)
            or await self._new_request(t, intents)
        )
        if handled:
            t.memory.failures = 0
            return
        if _foreign(t.text) and not t.state.get("foreign"):
            # "Hallo, was kostet…", "Dzień dobry, ile kosztuje…": say which languages the
            # bot reads, in English, with the price list, which needs no language to read.
            t.state["foreign"] = True
            t.lang = "en"
            t.replies.append(self._say(t, "foreign"))
            self._prices(t, [])
            return
        t.memory.failures += 1
        if t.memory.failures >= 2:
            t.replies.append(self._handoff(t, "handoff_failed", "the bot could not help twice"))
        else:
            t.replies.append(self._say(t, "fallback", buttons=self._words(t, "main_buttons")))

    def _asks_more(self, t: _Turn) -> bool:
        """Whether a message giving a name or number also asks for something: "на стрижку в
        суботу о 13, мене Тарас звати, 095…" is a booking too."""
        return bool(
            nlu.match_services(t.text, t.catalog.named_services())
            or nlu.parse_day(t.text, t.today)
            or nlu.parse_time(t.text)
        )

    async def _reminder_answer(self, t: _Turn, intents: set[str]) -> bool:
        """A tap on a reminder's button, or the same in words, acts at once on the appointment
        the client was reminded of: one tap confirms or cancels, with no question back (the
        reminder itself said which appointment). Without a recent reminder, or when the words
        name another day or time, it is an ordinary message."""
        kind = reminder_kind(t.text, intents, awaiting=t.state.get("awaiting"))
        if kind is None:
            return False
        found = await self._tool(t, "reminded_appointment", {})
        appointment = found.data.get("appointment") if found.ok else None
        if not appointment or not _names_it(t.text, kind, appointment, t.today):
            return False
        self._clear(t)
        if kind == "reschedule":
            await self._move_this(t, appointment)
            return True
        if kind == "confirm":
            result = await self._tool(t, "confirm", {"appointment_id": appointment["id"]})
        else:
            reason = "cancelled by the client in answer to a reminder"
            result = await self._tool(
                t, "cancel", {"appointment_id": appointment["id"], "reason": reason}
            )
        if not result.ok:
            t.replies.append(self._handoff(t, "error", f"{kind} failed: {result.error}"))
        elif kind == "confirm":
            text = self._appointment_text(t, result.data["confirmed"], "reminder_confirmed")
            t.replies.append(Reply(text=text))
        else:
            text = self._appointment_text(t, result.data["cancelled"], "reminder_cancelled")
            t.replies.append(Reply(text=text, quick_replies=self._words(t, "book_again_buttons")))
        return True

    async def _awaited(self, t: _Turn, intents: set[str]) -> bool:
        """An answer to what the bot asked last turn."""
        awaiting = t.state.get("awaiting")
        if "later" in intents and not nlu.parse_ordinal(t.text):
            return False  # "ok, I'll think about it": no choice made, nothing to press on
        if awaiting == "confirm":
            return await self._confirm_answer(t, intents)
        if awaiting == "confirm_cancel":
            if "reschedule" in intents:
                # "не отменяйте, лучше перенесите на пятницу": that appointment, moved.
                mine = {a["id"]: a for a in await self._mine(t)}
                appointment = mine.get(int(t.state["appointment_id"]))
                if appointment is not None:
                    self._clear(t)
                    await self._move_this(t, appointment)
                    return True
            if "yes" in intents and "no" not in intents:
                await self._cancel(t, int(t.state["appointment_id"]))
                return True
            if "no" in intents:
                self._clear(t)
                t.replies.append(self._say(t, "kept"))
                return True
        if awaiting in ("which_cancel", "which_move"):
            picked = _pick_appointment(
                t.text,
                t.state.get("choices", []),
                t.today,
                t.catalog.named_services(),
                t.catalog.named_masters(),
            )
            if picked is not None:
                if awaiting == "which_cancel":
                    self._ask_cancel(t, picked)
                else:
                    # "the one on Friday" names the appointment, not the day to move it to.
                    await self._move_this(t, picked, read_when=False)
                return True
        if awaiting == "slot" and not intents & {"prices", "duration"}:
            offered = t.state.get("offered", [])
            picked = _pick_slot(t.text, offered, t.today)
            if picked is None and len(offered) == 1 and _agrees(intents):
                picked = offered[0]  # "yes, that works" to the one time offered
            if picked is not None:
                await self._propose(t, picked)
                return True
            bare = _bare_hour(t.text) if not nlu.parse_time(t.text) else None
            if bare is not None and t.state.get("day"):
                # "11 works" when 11:00 is free but was not among the times shown.
                t.state["time"] = [_hhmm(bare.at), None, None]
                return await self._book(t, intents)
            if _agrees(intents) and not (nlu.parse_day(t.text, t.today) or nlu.parse_time(t.text)):
                t.replies.append(self._say(t, "pick_from_list"))  # "ok" to several times
                return True
        if awaiting == "service" and not intents & {"cancel", "reschedule", "my_appointments"}:
            choices = t.state.get("service_choices") or []
            place = nlu.parse_ordinal(t.text)
            named = nlu.match_services(t.text, t.catalog.named_services())
            if choices and not named and (place or _agrees(intents)):
                # "так" or "the second one" to "which: gel manicure or gel pedicure?"; the
                # summary before booking says which was taken, so a wrong guess costs a "no".
                index = (place - 1 if place > 0 else place) if place else 0
                if -len(choices) <= index < len(choices):
                    t.state["service_id"] = choices[index]
                    t.state.pop("service_choices", None)
                    return await self._book(t, intents)
            return await self._book(t, intents, asked=True)
        if awaiting in ("which_cancel", "which_move") and _agrees(intents):
            key = "which_cancel" if awaiting == "which_cancel" else "which_move"
            buttons = [c["label"] for c in t.state.get("choices", [])]
            t.replies.append(self._say(t, key, buttons=buttons))  # "yes" is not one of them
            return True
        if awaiting in ("slot", "new_time") and (
            nlu.parse_day(t.text, t.today)
            or nlu.parse_time(t.text)
            or "any_master" in intents
            or (t.state.get("moving_time") and nlu.says_same_time(t.text))
            or nlu.match_master(t.text, t.catalog.named_masters()) is not None
        ):
            return await self._book(t, intents)
        return False

    async def _new_request(self, t: _Turn, intents: set[str]) -> bool:
        if "cancel" in intents:
            await self._start_cancel(t)
            return True
        if "reschedule" in intents:
            await self._start_move(t)
            return True
        if "my_appointments" in intents and not intents & {"hours", "address", "prices"}:
            await self._list_mine(t)
            return True
        named = t.catalog.named_services()
        several = nlu.several_services(t.text, named)
        services = [(sid, 100.0) for sid in several] or nlu.prefer_for_whom(
            nlu.match_services(t.text, named), t.text, named
        )
        when = nlu.parse_day(t.text, t.today) or nlu.parse_time(t.text)
        # One message, several wishes ("haircut and beard on Saturday, how much?"): each
        # question is answered, and a booking it also asks for goes on after the answers.
        said = False
        if intents & {"prices", "duration"}:
            # Asked in the middle of choosing a time, the answer leaves the choice open.
            keep = t.state.get("awaiting") in ("slot", "confirm") and not services
            if keep and t.state.get("service_id"):
                services = [(int(t.state["service_id"]), 100.0)]
            self._prices(t, services, several=bool(several), keep=keep)
            if keep:
                return True
            t.state["asked"] = "prices"
            said = True
        if "hours" in intents:
            t.replies.append(self._say(t, "hours", hours=self._business_text(t, "hours_text")))
            said = True
        if "address" in intents:
            t.replies.append(self._say(t, "address", address=self._business_text(t, "address")))
            said = True
        if "my_appointments" in intents:
            await self._list_mine(t)
            return True
        if not services and (unoffered := nlu.unoffered_service(t.text, named)):
            t.replies.append(
                self._say(
                    t,
                    "declined_service",
                    asked=unoffered,
                    offered=self._categories(t),
                    buttons=self._words(t, "main_buttons")[:2],
                )
            )
            return True
        follow_up = t.state.get("asked") == "prices" and not said
        if follow_up and services and not when and "book" not in intents:
            # "skilky koshtuie manikiur?" … "a pedykiur?": the same question of another one.
            self._prices(t, services)
            t.state["asked"] = "prices"
            return True
        wants_booking = (
            "book" in intents or bool(services and when) or (t.state.get("flow") == "book" and when)
        )
        if wants_booking or (services and not said):
            if said and not services and t.state.get("service_id") is None:
                return True  # "what are your hours, I'd like to come": the answer first
            return await self._book(t, intents)
        if said:
            return True
        if "later" in intents and not intents & {"book", "cancel", "reschedule"}:
            self._clear(t)  # "I'll think about it": no list of times after that
            t.replies.append(self._say(t, "later_then"))
            return True
        if t.state.get("after") and intents & {"yes", "thanks"} and not intents - SMALL_TALK:
            # "ок", "дякую", "👍" after a finished booking: a goodbye, not a new booking.
            t.state.pop("after")
            t.replies.append(self._say(t, "see_you"))
            return True
        if "greeting" in intents or (not t.state.get("greeted") and not t.text):
            t.state["greeted"] = True
            name = t.catalog.business["name"]
            t.replies.append(
                self._say(t, "greeting", business=name, buttons=self._words(t, "main_buttons"))
            )
            return True
        if "thanks" in intents:
            t.replies.append(self._say(t, "thanks"))
            return True
        if "yes" in intents and t.state.get("flow") is None:
            # "yes" to "would you like to book?"
            return await self._book(t, intents | {"book"})
        return False

    # Booking ------------------------------------------------------------------------------

    async def _book(self, t: _Turn, intents: set[str], *, asked: bool = False) -> bool:
        """Fill what the message says into the booking being built, then ask for what is
        missing or offer free times."""
        state = t.state
        if state.get("flow") not in ("book", "move"):
            self._clear(t)
            state["flow"] = "book"
        if state["flow"] == "book":
            named = t.catalog.named_services()
            several = nlu.several_services(t.text, named)
            if several:
                # "манікюр і педикюр в п'ятницю": one visit, the services one after another.
                state["service_id"], state["then"] = several[0], several[1:]
            matches = [] if several else nlu.match_services(t.text, named)
            matches = nlu.prefer_for_whom(matches, t.text, named)
            if nlu.for_whom(t.text) and not state.get("note"):
                state["note"] = t.text[:300]  # "for my son": staff see who comes
            master = nlu.match_master(t.text, t.catalog.named_masters())
            if master is not None:
                state["master_id"] = master  # kept while the service is still asked about
            if matches:
                best = matches[0][1]
                close = [sid for sid, score in matches if best - score <= AMBIGUOUS]
                close = nlu.said_as_named(t.text, close, named) or close
                if master is not None:  # "до Марії на манікюр": what she does
                    close = [c for c in close if c in t.catalog.offers.get(master, ())] or close
                if len(close) > 1 and state.get("service_id") not in close:
                    state["awaiting"] = "service"
                    state["service_choices"] = close
                    self._remember_when(t)
                    names = [self._service_name(t, sid) for sid in close]
                    t.replies.append(self._say(t, "ask_service", buttons=names))
                    return True
                state["service_id"] = close[0] if len(close) == 1 else matches[0][0]
            if "any_master" in intents:
                state["master_id"] = None
        self._remember_when(t)
        if state["flow"] == "move" and state.get("time") and not state.get("day"):
            state["day"] = [state["moving_date"]] * 2  # "at 10:30": the day of the visit
        if state.get("service_id") is None:
            if (
                asked
                and state.get("service_choices")
                and (nlu.parse_day(t.text, t.today) or nlu.parse_time(t.text))
            ):
                # "friday morning" to "which: lashes or lash lift?": kept, asked again.
                names = [self._service_name(t, sid) for sid in state["service_choices"]]
                t.replies.append(self._say(t, "ask_service", buttons=names))
                return True
            if asked:
                state["awaiting"] = "service"
                t.replies.append(self._say(t, "unknown_service", buttons=self._service_buttons(t)))
                return False  # not understood: counts towards a hand-off
            state["awaiting"] = "service"
            t.replies.append(self._say(t, "ask_service", buttons=self._service_buttons(t)))
            return True
        await self._offer(t)
        return True

    def _remember_when(self, t: _Turn) -> None:
        # Moving, "can't make it tomorrow, could we do Wednesday?": the day after the words
        # that ask for the move is where to, the one before is the visit as it stands.
        moving = t.state.get("flow") == "move"
        text = nlu.move_target(t.text) if moving else t.text
        last = moving or t.state.pop("replan", False)
        day = nlu.last_day(text, t.today) if last else nlu.parse_day(text, t.today)
        when = nlu.parse_time(text)
        if day is not None:
            t.state["day"] = [day.first.isoformat(), day.last.isoformat()]
        if when is not None:
            t.state["time"] = [_hhmm(when.at), _hhmm(when.after), _hhmm(when.before)]
        elif t.state.get("moving_time") and nlu.says_same_time(text):
            t.state["time"] = [t.state["moving_time"], None, None]  # the time it is now at
        span = t.state.get("day")
        if moving and span and span[0] != span[1] and t.state.get("moving_date"):
            # "next week, same day": the visit's own weekday within the span named.
            weekday = date.fromisoformat(t.state["moving_date"]).weekday()
            first, last = date.fromisoformat(span[0]), date.fromisoformat(span[1])
            same = [first + timedelta(days=i) for i in range((last - first).days + 1)]
            same = [d for d in same if d.weekday() == weekday]
            if same and (nlu.says_same_day(text) or nlu.says_same_time(text)):
                t.state["day"] = [same[0].isoformat()] * 2

    async def _offer(self, t: _Turn) -> None:
        """Free times for what the client asked, or the nearest ones when that is full."""
        state = t.state
        service_id = int(state["service_id"])
        service = self._service_name(t, service_id)
        found, leads = await self._search(t, service_id, service)
        if not found:
            t.replies.append(self._handoff(t, "no_slots", "no free time", service=service))
            return
        at = _time((state.get("time") or (None,))[0])
        if nlu.parse_ordinal(t.text) == 1 and not leads:
            # "на найближчий час", "the earliest you have": that one, said back to confirm.
            await self._propose(t, found[0])
            return
        if at is not None and not leads and state.get("day"):
            # A day and an exact time that are free: say it back and ask, as a person at the
            # desk would, before anything is written.
            await self._propose(t, found[0])
            return
        offered = _spread(found, OFFER)
        several = len({s["master_id"] for s in offered}) > 1
        for slot in offered:
            slot["label"] = self._slot_label(t, slot, with_master=several)
        state["offered"] = [
            {"label": s["label"], "start": s["start"], "master_id": s["master_id"]} for s in offered
        ]
        state["awaiting"] = "slot"
        listed = "\n".join(self._words(t, "slot_line").format(label=s["label"]) for s in offered)
        master_part = ""
        if not several and offered[0].get("master"):
            master = self._master_name(t, offered[0]["master_id"], "gent")
            master_part = self._words(t, "offer_master").format(master=master)
        parts = list(leads)
        parts.append(
            self._words(t, "offer_slots").format(service=service, master=master_part, list=listed)
        )
        t.replies.append(Reply(text="\n".join(parts), quick_replies=[s["label"] for s in offered]))

    async def _search(
        self, t: _Turn, service_id: int, service: str
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """Free times as asked; failing that the same day(s) at other times, then the days
        nearest the one asked for, then other masters. With what to say about each step."""
        state = t.state
        leads: list[str] = []
        master_id = state.get("master_id")
        if master_id and service_id not in t.catalog.offers.get(int(master_id), frozenset()):
            master = t.catalog.masters.get(int(master_id), "")
            leads.append(self._words(t, "master_not_doing").format(master=master, service=service))
            master_id = state["master_id"] = None
        day = state.get("day")
        at, after, before = [_time(v) for v in state.get("time") or (None, None, None)]
        if at is not None:
            after = before = at
        query: dict[str, Any] = {"service_id": service_id, "limit": SEARCH}
        if master_id:
            query["master_id"] = master_id
        if day:
            query["date_from"], query["date_to"] = day
        exact = {**query, "after": _hhmm(after), "before": _hhmm(before)}
        found = await self._slots(t, {k: v for k, v in exact.items() if v is not None})
        if not found and (at or after or before):
            # Nothing at that time: the same day(s) at any time, as close to it as can be.
            found = await self._slots(t, query)
            if at is not None:
                found.sort(key=lambda s: abs(_minutes(s["time"]) - _minutes(_hhmm(at))))
            if found:
                leads.append(self._words(t, "none_then").format(service=service))
        if not found and day:
            # Nothing that day: the nearest days, at the time asked for if it is free there.
            anyday = {k: v for k, v in exact.items() if k not in ("date_from", "date_to")}
            found = await self._around(t, {k: v for k, v in anyday.items() if v is not None}, day)
            if not found and (after or before):
                found = await self._around(t, query, day)
            if found:
                leads.append(self._words(t, "none_that_day").format(service=service))
        if not found and master_id:
            anyone = {"service_id": service_id, "limit": SEARCH}
            found = await self._around(t, anyone, day) if day else await self._slots(t, anyone)
            master = self._master_name(t, master_id, "gent")
            leads.append(self._words(t, "master_busy").format(master=master, service=service))
            state["master_id"] = None
        return found, leads

    async def _around(
        self, t: _Turn, query: dict[str, Any], day: Sequence[str]
    ) -> list[dict[str, Any]]:
        """Free times on the days asked for and the nearest days before and after them: the
        soonest times from today alone would never reach a Saturday asked for on a Monday."""
        query = {k: v for k, v in query.items() if k not in ("date_from", "date_to")}
        first, last = date.fromisoformat(day[0]), date.fromisoformat(day[1])
        found = await self._slots(t, {**query, "date_from": day[0], "date_to": day[1]})
        found += await self._slots(
            t, {**query, "date_from": (last + timedelta(days=1)).isoformat()}
        )
        for back in range(1, AROUND_DAYS + 1):  # the nearest earlier day with a free time
            earlier = first - timedelta(days=back)
            if earlier < t.today:
                break
            on_day = {**query, "date_from": earlier.isoformat(), "date_to": earlier.isoformat()}
            if before := await self._slots(t, on_day):
                found += before
                break
        return _nearest_days(found, day[0])

    async def _slots(self, t: _Turn, query: dict[str, Any]) -> list[dict[str, Any]]:
        if t.state.get("flow") == "move" and t.state.get("appointment_id"):
            query = {**query, "moving": t.state["appointment_id"]}  # "an hour earlier" overlaps it
        result = await self._tool(t, "find_slots", query)
        return list(result.data.get("slots", [])) if result.ok else []

    async def _propose(self, t: _Turn, slot: dict[str, Any]) -> None:
        """Say the booking (or the move) back and ask before writing it: a misread day or
        service costs the client a "no", never a wrong visit. On a channel that vouches for
        no one, the name and phone are asked for in the same breath."""
        state = t.state
        service_id = int(state["service_id"])
        master_id = slot.get("master_id")
        start = str(slot["start"])
        values: dict[str, Any] = {
            "extra": "",
            "service": self._service_name(t, service_id),
            "master": self._master_name(t, master_id, "gent"),
            "weekday": self._weekday(t, date.fromisoformat(start[:10]).weekday()),
            "date": _day_month(start[:10]),
            "time": start[11:16],
            "price": self._price(t, service_id, master_id),
        }
        state["pending"] = {"start": slot["start"], "master_id": master_id}
        state["awaiting"] = "confirm"
        state.pop("need", None)
        if state.get("then") and state.get("flow") == "book":
            chain = await self._chain(t, slot, [int(i) for i in state["then"]])
            state["pending"]["chain"] = chain
            values["extra"] = "".join(
                self._words(t, "and_then").format(
                    service=self._service_name(t, extra["service_id"]),
                    time=extra["start"][11:16],
                    price=self._price(t, extra["service_id"], extra.get("master_id")),
                )
                for extra in chain
            )
        if state.get("flow") == "move":
            values["old"] = state.get("moving", "")
            t.replies.append(
                self._say(t, "confirm_move", buttons=self._words(t, "yes_no"), **values)
            )
            return
        need = await self._missing_contact(t)
        if need:
            state["need"] = need
            key = "confirm_book_phone" if need == ["phone"] else "confirm_book_details"
            t.replies.append(self._say(t, key, **values))
            return
        t.replies.append(self._say(t, "confirm_book", buttons=self._words(t, "yes_no"), **values))

    async def _chain(
        self, t: _Turn, first: dict[str, Any], services: list[int]
    ) -> list[dict[str, Any]]:
        """The next services of a visit, each at the first free time that day after the one
        before ends (with the same master when they do it)."""
        chain: list[dict[str, Any]] = []
        start, master_id, service_id = str(first["start"]), first.get("master_id"), None
        service_id = int(t.state["service_id"])
        for next_id in services:
            ends = _minutes(start[11:16]) + self._duration(t, service_id, master_id)
            query: dict[str, Any] = {
                "service_id": next_id,
                "date_from": start[:10],
                "date_to": start[:10],
                "after": f"{ends // 60:02d}:{ends % 60:02d}",
                "limit": 20,
            }
            found = await self._slots(t, query)
            same = [s for s in found if master_id and s.get("master_id") == master_id]
            if not (same or found):
                break
            slot = (same or found)[0]
            chain.append(
                {"service_id": next_id, "start": slot["start"], "master_id": slot["master_id"]}
            )
            start, master_id, service_id = slot["start"], slot["master_id"], next_id
        return chain

    def _duration(self, t: _Turn, service_id: int, master_id: int | None) -> int:
        default = int(t.catalog.services[service_id]["held"])
        if not master_id:
            return default
        return t.catalog.durations.get((int(master_id), service_id), default)

    async def _missing_contact(self, t: _Turn) -> list[str]:
        if t.turn.channel not in WEAK_IDENTITY:
            return []
        found = await self._tool(t, "contact", {})
        if not found.ok:
            return []
        missing = [key for key in ("name", "phone") if not found.data.get(f"has_{key}")]
        return [] if missing == ["name"] else missing  # a phone reaches them; the name can wait

    async def _confirm_answer(self, t: _Turn, intents: set[str]) -> bool:
        """The client's answer to the summary: yes (or the details asked for) writes it; a
        new day, time, master or offered time changes the plan; no drops it."""
        state = t.state
        pending = state.get("pending") or {}
        offered = state.get("offered", [])
        picked = _pick_slot(t.text, offered, t.today) if offered else None
        if picked is not None and picked["start"] != pending.get("start"):
            await self._propose(t, picked)  # another of the offered times
            return True
        agrees = _agrees(intents) or picked is not None or t.gave_contact
        if self._changes_plan(t, pending, intents):
            # "ой, в четвер не можу, давайте в п'ятницю о 17", "could Andrii do it instead,
            # same time": the plan changes, whatever yes-words come with it.
            state.pop("pending", None)
            state["awaiting"] = "slot"
            state["replan"] = True  # "в четвер не можу, давайте в п'ятницю": the last day
            if nlu.says_same_time(t.text) and not nlu.parse_time(t.text):
                state["time"] = [str(pending.get("start", ""))[11:16] or None, None, None]
            return await self._book(t, intents)
        if intents & {"prices", "duration"} and not agrees:
            # "а скільки це триває?" before the yes: answered, and the question stands.
            self._prices(t, [(int(state["service_id"]), 100.0)], keep=True)
            t.replies.append(self._say(t, "confirm_again", buttons=self._words(t, "yes_no")))
            return True
        if "no" in intents and not t.gave_contact:
            state.pop("pending", None)
            state["awaiting"] = "slot"
            buttons = [o["label"] for o in offered]
            t.replies.append(self._say(t, "propose_declined", buttons=buttons))
            return True
        if not agrees:
            return False
        if state.get("need"):
            need = await self._missing_contact(t)
            if "phone" in need:
                state["need"] = need
                t.replies.append(
                    self._say(t, "ask_details" if "name" in need else "ask_phone_only")
                )
                return True
        await self._commit(t)
        return True

    def _changes_plan(self, t: _Turn, pending: dict[str, Any], intents: set[str]) -> bool:
        """Whether an answer to the summary names another day, time or master than it."""
        start = str(pending.get("start", ""))
        day = nlu.last_day(t.text, t.today)
        if day is not None and not day.first.isoformat() <= start[:10] <= day.last.isoformat():
            return True
        when = nlu.parse_time(t.text)
        if when is not None and when.at is not None and _hhmm(when.at) != start[11:16]:
            return True
        if when is not None and when.at is None:
            clock = _time(start[11:16])
            if (when.after and clock and clock < when.after) or (
                when.before and clock and clock > when.before
            ):
                return True
        # The details message ("Helen, 095…", "Марина 099…") names the client, and a client
        # may share a master's name: only a message without them can change the master.
        master = None if t.gave_contact else nlu.match_master(t.text, t.catalog.named_masters())
        if master is not None and master != pending.get("master_id"):
            return True
        return "any_master" in intents and t.state.get("master_id") is not None

    async def _commit(self, t: _Turn) -> None:
        """Book (or move to) the time the client agreed to."""
        state = t.state
        slot = state.get("pending") or {}
        if state.get("flow") == "move":
            args = {"appointment_id": state["appointment_id"], "start": slot["start"]}
            if slot.get("master_id"):
                args["master_id"] = slot["master_id"]
            result = await self._tool(t, "reschedule", args)
            key, data_key = "moved", "moved"
        else:
            args = {"service_id": state["service_id"], "start": slot["start"]}
            if slot.get("master_id"):
                args["master_id"] = slot["master_id"]
            if state.get("note"):
                args["note"] = state["note"]
            result = await self._tool(t, "book", args)
            key, data_key = "booked", "booked"
            if result.ok:
                for extra in slot.get("chain", []):
                    more = {k: v for k, v in extra.items() if v is not None}
                    done = await self._tool(t, "book", more)
                    if not done.ok:  # the first is booked; staff fit the rest
                        t.replies.append(self._handoff(t, "error", f"book failed: {done.error}"))
                        return
                    result.data.setdefault("more", []).append(done.data["booked"])
        if not result.ok:
            alternatives = result.data.get("alternatives") or []
            if alternatives:
                t.replies.append(self._say(t, "slot_taken"))
                for stale in ("day", "time", "pending"):
                    state.pop(stale, None)
                await self._offer(t)
                return
            t.replies.append(self._handoff(t, "error", f"{key} failed: {result.error}"))
            return
        done = result.data[data_key]
        extra = "".join(
            self._words(t, "and_then").format(
                service=more["service"],
                time=more["time"],
                price=self._money(t, more["price"], more["currency"]),
            )
            for more in result.data.get("more", [])
        )
        self._clear(t)
        t.state["after"] = key  # an "ok" or "👍" now closes the dialogue, not a new one
        t.replies.append(
            self._say(
                t,
                key,
                service=done["service"],
                weekday=self._weekday(t, done["weekday"]),
                date=_day_month(done["date"]),
                time=done["time"],
                master=person_name(done["master"], "nomn", t.lang),
                price=self._money(t, done["price"], done["currency"]),
                extra=extra,
                address=self._address_part(t, result.data.get("address", "")),
            )
        )
        if key == "booked" and not result.data.get("client_has_phone"):
            t.state["awaiting"] = "phone"
            t.replies.append(self._say(t, "ask_phone"))

    # Their appointments -------------------------------------------------------------------

    async def _mine(self, t: _Turn) -> list[dict[str, Any]]:
        result = await self._tool(t, "my_appointments", {})
        return list(result.data.get("appointments", [])) if result.ok else []

    async def _list_mine(self, t: _Turn) -> None:
        mine = await self._mine(t)
        self._clear(t)
        if not mine:
            t.replies.append(self._say(t, "my_none", buttons=self._words(t, "main_buttons")[:1]))
            return
        lines = "\n".join(self._appointment_text(t, a, "appointment_line") for a in mine)
        t.replies.append(self._say(t, "my_list", list=lines))

    async def _start_cancel(self, t: _Turn) -> None:
        mine = await self._mine(t)
        self._clear(t)
        if not mine:
            t.replies.append(self._say(t, "my_none"))
            return
        if len(mine) > 1 and nlu.says_all(t.text):
            # "скасуйте обидва мої записи": all of them, asked once.
            t.state.update(flow="cancel", awaiting="confirm_cancel", appointment_id=mine[0]["id"])
            t.state["cancel_all"] = [a["id"] for a in mine]
            labels = "; ".join(self._appointment_text(t, a, "appointment_label") for a in mine)
            t.replies.append(
                self._say(t, "confirm_cancel", appointment=labels, buttons=self._words(t, "yes_no"))
            )
            return
        # "Cancel Friday's appointment": the message may already say which one.
        named = _pick_appointment(
            t.text,
            self._choices(t, mine),
            t.today,
            t.catalog.named_services(),
            t.catalog.named_masters(),
        )
        if len(mine) == 1 or named is not None:
            self._ask_cancel(t, named or mine[0])
        else:
            self._ask_which(t, mine, "which_cancel")

    def _ask_cancel(self, t: _Turn, appointment: dict[str, Any]) -> None:
        t.state.update(flow="cancel", awaiting="confirm_cancel", appointment_id=appointment["id"])
        t.replies.append(
            self._say(
                t,
                "confirm_cancel",
                appointment=self._appointment_text(t, appointment, "appointment_label"),
                buttons=self._words(t, "yes_no"),
            )
        )

    async def _cancel(self, t: _Turn, appointment_id: int) -> None:
        result: ToolResult | None = None
        for one in t.state.get("cancel_all") or [appointment_id]:
            result = await self._tool(t, "cancel", {"appointment_id": one})
            if not result.ok:
                break
        assert result is not None
        self._clear(t)
        if result.ok:
            t.replies.append(self._say(t, "cancelled"))
        else:
            t.replies.append(self._handoff(t, "error", f"cancel failed: {result.error}"))

    async def _start_move(self, t: _Turn) -> None:
        mine = await self._mine(t)
        self._clear(t)
        if not mine:
            if nlu.match_services(t.text, t.catalog.named_services()):
                await self._book(t, set())  # "gel at 4 instead": nothing to move, so a booking
                return
            t.replies.append(self._say(t, "my_none"))
        elif len(mine) == 1:
            await self._move_this(t, mine[0])
        else:
            # "move the beard one to Thursday": the service says which; a day or time in the
            # message is where to move it, so only the service narrows here.
            named = {sid for sid, _ in nlu.match_services(t.text, t.catalog.named_services())}
            these = [a for a in mine if a["service_id"] in named]
            if len(these) == 1:
                await self._move_this(t, these[0])
                return
            self._remember_when(t)
            self._ask_which(t, these or mine, "which_move")

    async def _move_this(
        self, t: _Turn, appointment: dict[str, Any], *, read_when: bool = True
    ) -> None:
        t.state.update(
            flow="move",
            appointment_id=appointment["id"],
            service_id=appointment["service_id"],
            master_id=appointment["master_id"],
            moving=self._appointment_text(t, appointment, "moving_label"),
            moving_time=appointment["time"],
            moving_date=appointment["date"],
        )
        if read_when:
            self._remember_when(t)
            if t.state.get("day") == [appointment["date"]] * 2 and not t.state.get("time"):
                t.state.pop("day")  # "move my Friday appointment": the visit, not where to
        shift = nlu.parse_shift(t.text) if read_when else None
        if shift is not None and not t.state.get("time"):
            at = _minutes(appointment["time"])
            if shift.minutes:
                moved = at + shift.direction * shift.minutes
                t.state["time"] = [f"{moved // 60:02d}:{moved % 60:02d}", None, None]
            elif shift.direction > 0:
                t.state["time"] = [None, appointment["time"], None]
            else:
                t.state["time"] = [None, None, appointment["time"]]
        if t.state.get("time") and not t.state.get("day"):
            # "move it to 4 pm", "a bit later that day": the same day as the visit.
            t.state["day"] = [appointment["date"]] * 2
        if t.state.get("day") or t.state.get("time"):
            await self._offer(t)
            return
        t.state["awaiting"] = "new_time"
        t.replies.append(self._say(t, "ask_new_time", service=appointment["service"]))

    def _ask_which(self, t: _Turn, mine: list[dict[str, Any]], key: str) -> None:
        choices = self._choices(t, mine)
        t.state.update(awaiting=key, choices=choices)
        t.replies.append(self._say(t, key, buttons=[c["label"] for c in choices]))

    def _choices(self, t: _Turn, mine: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            {"label": self._appointment_text(t, a, "appointment_label")[:64], **a} for a in mine
        ]

    # Other answers ------------------------------------------------------------------------

    def _prices(
        self,
        t: _Turn,
        services: list[tuple[int, float]],
        *,
        several: bool = False,
        keep: bool = False,
    ) -> None:
        """The price list, or the prices of the services named. `keep`: asked in the middle
        of a booking, which goes on as it was."""
        catalog = t.catalog.services
        if services:
            best = services[0][1]
            ids = [sid for sid, score in services if best - score <= AMBIGUOUS]
            lines = []
            for sid in ids:
                s = catalog[sid]
                lines.append(
                    self._words(t, "price_one" if len(ids) == 1 else "price_line").format(
                        service=self._service_name(t, sid),
                        price=self._money(t, s["price"], self.currency_of(t)),
                        duration=locale_text.duration(s["duration"], t.lang),
                    )
                )
            if len(ids) > 1:
                lines.insert(0, self._words(t, "prices_header"))
            if keep:
                pass
            elif several:
                t.state.update(flow="book", service_id=ids[0], then=ids[1:])
            else:
                t.state.update(flow="book", service_id=ids[0] if len(ids) == 1 else None)
        else:
            lines = [self._words(t, "prices_header")]
            for sid, s in catalog.items():
                lines.append(
                    self._words(t, "price_line").format(
                        service=self._service_name(t, sid),
                        price=self._money(t, s["price"], self.currency_of(t)),
                        duration=locale_text.duration(s["duration"], t.lang),
                    )
                )
        if keep:
            t.replies.append(Reply(text="\n".join(lines)))
            return
        lines.append(self._words(t, "prices_more"))
        t.replies.append(
            Reply(text="\n".join(lines), quick_replies=self._words(t, "main_buttons")[:1])
        )

    async def _save_contact(
        self, t: _Turn, phone: str | None, name: str | None, *, quiet: bool = False
    ) -> bool:
        """The same thank-you whether the number was new or already on someone's card (then
        staff check the claim and link the cards): a stranger typing numbers learns nothing.
        Typed out of the blue, the words also say how a returning client's appointments join
        this chat; which words depend on the dialogue only, never on the records. `quiet`:
        the details answer the bot's own question, and the answer to that says enough."""
        args = {k: v for k, v in (("phone", phone), ("name", name)) if v is not None}
        result = await self._tool(t, "update_contact", args)
        if not result.ok and phone is not None and name is not None:
            await self._tool(t, "update_contact", {"name": name})  # the name stands alone
        if quiet:
            if not result.ok and phone is not None:
                t.replies.append(self._say(t, "bad_phone"))
            return result.ok
        asked = t.state.get("awaiting") == "phone"
        if asked:
            t.state.pop("awaiting")
        if phone is None:
            t.replies.append(self._say(t, "name_saved", name=name))
            return result.ok
        if not result.ok:
            key = "bad_phone"
        else:
            key = "phone_saved" if asked else "phone_noted"
        t.replies.append(self._say(t, key))
        return result.ok

    # Helpers ------------------------------------------------------------------------------

    async def _tool(self, t: _Turn, name: str, args: dict[str, Any]) -> ToolResult:
        ctx = ToolContext(t.turn.conversation_id, t.lang)
        result = await self.tools.call(name, args, ctx)
        if not result.ok:
            log.info("tool %s refused: %s", name, result.error)
        return result

    def _handoff(self, t: _Turn, key: str, reason: str, **values: Any) -> Reply:
        return Reply(
            text=self._words(t, key).format(**values),
            handoff=True,
            handoff_reason=reason,
        )

    def _say(self, t: _Turn, key: str, *, buttons: Sequence[str] = (), **values: Any) -> Reply:
        return Reply(text=self._words(t, key).format(**values), quick_replies=list(buttons))

    def _words(self, t: _Turn, key: str) -> Any:
        return load_json("offline/replies.json")[t.lang][key]

    def _clear(self, t: _Turn) -> None:
        keep = {k: t.state[k] for k in ("lang", "greeted") if k in t.state}
        t.state.clear()
        t.state.update(keep)

    def _language(self, turn: Turn, memory: Memory) -> nlu.Language:
        known = memory.state.get("lang") or turn.language
        default: nlu.Language = known if known in ("uk", "en", "ru") else "uk"  # type: ignore[assignment]
        words = re.findall(r"[^\W\d_]{2,}", turn.text)
        if known and len(words) < 2:
            return default  # "ok", "15:30", a button: no reason to switch language
        return nlu.detect_language(turn.text, default=default)

    async def _catalog(self, session: AsyncSession) -> Catalog:
        business = await get_business(session, timezone=self.timezone, currency=self.currency)
        services = await list_services(session)
        masters = await list_masters(session)
        offered = {o.service_id for card in masters for o in card.offers}
        return Catalog(
            services={
                s.id: {  # type: ignore[misc]
                    "names": tuple(n for n in (s.name_uk, s.name_en, s.name_ru) if n),
                    "uk": s.name_uk,
                    "en": s.name_en,
                    "ru": s.name_ru or s.name_uk,
                    "price": s.price_minor / 100,
                    "duration": s.duration_min,
                    "held": s.duration_min + s.buffer_min,
                }
                for s in services
                if s.id in offered
            },
            masters={card.staff.id: card.staff.name for card in masters},  # type: ignore[misc]
            offers={
                card.staff.id: frozenset(o.service_id for o in card.offers)  # type: ignore[misc]
                for card in masters
            },
            prices={
                (card.staff.id, o.service_id): o.price_minor / 100  # type: ignore[misc]
                for card in masters
                for o in card.offers
            },
            durations={  # the time a visit holds the master: the buffer after it too
                (card.staff.id, o.service_id): o.duration_min + o.buffer_min  # type: ignore[misc]
                for card in masters
                for o in card.offers
            },
            business={
                "name": business.name,
                "tz": ZoneInfo(business.timezone),
                "currency": business.currency,
                "address": business.address or {},
                "hours_text": business.hours_text or {},
            },
        )

    def _master_name(self, t: _Turn, master_id: int | None, case: morph.Case = "nomn") -> str:
        """A master's name as the sentence needs it: "у майстра Олени Коваль", in Russian
        "у мастера Ирины Мельник" (the first name in its Russian spelling)."""
        name = t.catalog.masters.get(int(master_id)) if master_id else None
        if not name:
            return str(self._words(t, "any_master_name"))
        return person_name(name, case, t.lang)

    def _price(self, t: _Turn, service_id: int, master_id: int | None) -> str:
        service = t.catalog.services[service_id]
        amount = service["price"]
        if master_id:
            amount = t.catalog.prices.get((int(master_id), service_id), amount)
        return self._money(t, amount, self.currency_of(t))

    def _money(self, t: _Turn, amount: float, currency: str) -> str:
        return locale_text.money(amount, currency, t.lang)

    def _address_part(self, t: _Turn, address: str) -> str:
        return self._words(t, "address_part").format(address=address) if address else ""

    def currency_of(self, t: _Turn) -> str:
        return str(t.catalog.business["currency"])

    def _business_text(self, t: _Turn, key: str) -> str:
        texts = t.catalog.business[key]
        return str(texts.get(t.lang) or texts.get("uk") or "—")

    def _service_name(self, t: _Turn, service_id: int) -> str:
        return str(t.catalog.services[service_id][t.lang])

    def _categories(self, t: _Turn) -> str:
        """What the salon does, in a few words: its services' names, the first of each
        kind, so a declined wish is answered with what there is."""
        names = [self._service_name(t, sid) for sid in t.catalog.services]
        return ", ".join(names[:8]) + ("…" if len(names) > 8 else "")

    def _service_buttons(self, t: _Turn) -> list[str]:
        return [self._service_name(t, sid)[:64] for sid in list(t.catalog.services)[:8]]

    def _weekday(self, t: _Turn, weekday: int) -> str:
        return str(self._words(t, "weekdays")[weekday])

    def _slot_label(self, t: _Turn, slot: dict[str, Any], *, with_master: bool) -> str:
        key = "slot_label_master" if with_master and slot.get("master") else "slot_label"
        return self._words(t, key).format(
            weekday=self._weekday(t, slot["weekday"]),
            day=_day_month(slot["date"]),
            time=slot["time"],
            master=(slot.get("master") or "").split()[0] if slot.get("master") else "",
        )[:64]

    def _appointment_text(self, t: _Turn, a: dict[str, Any], key: str) -> str:
        return self._words(t, key).format(
            weekday=self._weekday(t, a["weekday"]),
            date=_day_month(a["date"]),
            time=a["time"],
            service=a["service"],
            master=a["master"],
        )


# Pure helpers -----------------------------------------------------------------------------


def person_name(full_name: str, case: morph.Case, lang: nlu.Language) -> str:
    """A person's name declined for the sentence. In Russian a first name written with
    Ukrainian letters is spelt the Russian way when the lexicon knows it ("Ірина" → "Ирина",
    "Андрій" → "Андрей"); one Russian can write ("Олена") stays as the salon wrote it."""
    if lang == "en":
        return full_name
    first, _, rest = full_name.partition(" ")
    said = first.lower()
    if lang == "ru" and re.search(r"[іїєґ]", said):  # a spelling Russian has no letters for
        russian = [
            v
            for v in nlu.name_variants(first)
            if re.fullmatch(r"[а-я]+", v) and morph.word_is_known(v, "ru")
        ]
        if russian:  # the nearest spelling: "Ірина" is "Ирина", not "Ира"
            first = min(russian, key=lambda v: nlu.edit_distance(v, said)).capitalize()
    return morph.inflect_person(f"{first} {rest}".strip(), case, lang)


def find_phone(text: str, region: str = "UA") -> str | None:
    """A phone number written in a message, as E.164."""
    for match in PHONE.finditer(text):
        phone = normalize_phone(match.group(0), region)
        if phone is not None:
            return phone
    return None


def reminder_kind(text: str, intents: set[str], *, awaiting: str | None = None) -> str | None:
    """The answer ("confirm", "cancel" or "reschedule") when the message reads as one to a
    reminder: one of its buttons in any language, or words asking for just that."""
    said = nlu.normalize(text)
    for words in load_json("notices/reminder.json").values():
        for kind in REMINDER_ANSWERS:
            if nlu.normalize(words[kind]) == said:
                return kind
    if awaiting == "confirm_cancel":
        return None  # the bot's own yes/no question was last: "confirm" there means yes
    kinds = [kind for kind in REMINDER_ANSWERS if kind in intents]
    if len(kinds) != 1 or intents & NOT_AN_ANSWER:
        return None
    if kinds == ["confirm"] and ("no" in intents or _negated(said)):
        return None  # "не підтверджую"
    return kinds[0]


def _negated(normalized: str) -> bool:
    negations = set(load_json("offline/lexicon.json")["negations"])
    return any(word in negations for word in WORD.findall(normalized))


def _names_it(text: str, kind: str, appointment: dict[str, Any], today: date) -> bool:
    """Whether a confirm or cancel may be about the reminded appointment: a day or a time in
    the message that is not the appointment's points at another one. (For a move the day
    and time are where to move it.)"""
    if kind == "reschedule":
        return True
    day = nlu.parse_day(text, today)
    if day is not None and not day.first.isoformat() <= appointment["date"] <= day.last.isoformat():
        return False
    when = nlu.parse_time(text)
    return when is None or when.at is None or _hhmm(when.at) == appointment["time"]


def _pick(text: str, choices: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The choice whose label the client sent (a button), or its place in the list."""
    said = nlu.normalize(text)
    for choice in choices:
        if nlu.normalize(choice["label"]) == said:
            return choice
    if said.isdigit() and 1 <= int(said) <= len(choices):
        return choices[int(said) - 1]
    place = nlu.parse_ordinal(text)  # "другий", "the second one", "последний"
    if place is not None and 1 <= abs(place) <= len(choices):
        return choices[place - 1 if place > 0 else place]
    return None


def _pick_appointment(
    text: str,
    choices: Sequence[dict[str, Any]],
    today: date,
    services: Sequence[nlu.Named],
    masters: Sequence[nlu.Named] = (),
) -> dict[str, Any] | None:
    """The appointment the client chose: its button or number, or the only one on the day,
    at the time or of the service they name ("той, що в п'ятницю", "the haircut")."""
    chosen = _pick(text, choices)
    if chosen is not None:
        return chosen
    text = nlu.without_kept(text)  # "…, the brow one next week stays"
    left, narrowed = list(choices), False
    day = nlu.parse_day(text, today)
    if day is not None:
        first, last = day.first.isoformat(), day.last.isoformat()
        left, narrowed = [c for c in left if first <= c["date"] <= last], True
    when = nlu.parse_time(text)
    if when is not None and when.at is not None:
        left, narrowed = [c for c in left if c["time"] == _hhmm(when.at)], True
    named = {sid for sid, _ in nlu.match_services(text, services)}
    if named:
        left, narrowed = [c for c in left if c["service_id"] in named], True
    master = nlu.match_master(text, masters) if masters else None
    if master is not None and len(left) > 1:
        left, narrowed = [c for c in left if c.get("master_id") == master], True  # "до Ірини"
    return left[0] if narrowed and len(left) == 1 else None


_LATIN_ONLY = re.compile(r"[A-Za-z0-9\s.,!?:'\-()]+")
# Latin letters English does not use: a message in German, Polish, French, Czech…
_FOREIGN_LETTERS = re.compile(r"[À-ÖØ-öø-ÿĀ-ž]")  # no IGNORECASE: "ſ" folds to "s"


def _foreign(text: str) -> bool:
    return bool(_FOREIGN_LETTERS.search(text)) and not re.search(r"[а-яіїєґё]", text.lower())


def _agrees(intents: set[str]) -> bool:
    return "yes" in intents and "no" not in intents


def _pick_slot(text: str, offered: Sequence[dict[str, Any]], today: date) -> dict[str, Any] | None:
    """An offered time the client chose: its button, its number, or its time ("15:30", "о 3")
    on the day they name, or the only day it was offered on."""
    chosen = _pick(text, offered)
    if chosen is not None:
        return chosen
    when = nlu.parse_time(text) or _bare_hour(text)
    if when is None or when.at is None:
        return None
    at = when.at.strftime("%H:%M")
    same = [s for s in offered if s["start"][11:16] == at]
    day = nlu.parse_day(text, today)
    if day is not None:
        same = [s for s in same if day.first.isoformat() <= s["start"][:10] <= day.last.isoformat()]
    return same[0] if len({s["start"][:10] for s in same}) == 1 else None


_NUMBER = re.compile(r"(?<![\d:.+])(\d{1,2})(?::(\d\d))?(?![\d:.])")


def _bare_hour(text: str) -> nlu.TimeSpec | None:
    """ "10 is perfect", "давайте 15" in answer to a list of times: the one number said is an
    hour (read as the rules read "о 10")."""
    numbers = _NUMBER.findall(text)
    if len(numbers) != 1:
        return None
    hour, minutes = numbers[0]
    return nlu.parse_time(f"о {hour}:{minutes or '00'}")


def _spread(slots: Sequence[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """Up to `count` times in the order given, at least SPREAD apart where there are enough,
    so the client sees a real choice rather than 10:00, 10:15, 10:30…"""
    distinct = list({s["start"]: s for s in slots}.values())
    chosen: list[dict[str, Any]] = []
    for slot in distinct:
        start = datetime.fromisoformat(slot["start"])
        if all(abs(datetime.fromisoformat(c["start"]) - start) >= SPREAD for c in chosen):
            chosen.append(dict(slot))
        if len(chosen) == count:
            break
    for slot in distinct:  # too few far apart: fill up with the nearest others
        if len(chosen) == count:
            break
        if all(c["start"] != slot["start"] for c in chosen):
            chosen.append(dict(slot))
    return sorted(chosen, key=lambda s: s["start"])


def _nearest_days(slots: Sequence[dict[str, Any]], wanted: str) -> list[dict[str, Any]]:
    """Times of the days nearest the day asked for first (a later day before an earlier one
    as near), each day's in order: "Tuesday is full" is answered with Wednesday and Monday,
    not with whatever is soonest."""
    target = date.fromisoformat(wanted)

    def distance(slot: dict[str, Any]) -> tuple[int, bool, str]:
        day = date.fromisoformat(slot["date"])
        return abs((day - target).days), day < target, slot["start"]

    return sorted(slots, key=distance)


def _hhmm(value: time | None) -> str | None:
    return value.strftime("%H:%M") if value else None


def _time(value: str | None) -> time | None:
    return time.fromisoformat(value) if value else None


def _minutes(hhmm: str | None) -> int:
    if not hhmm:
        return 0
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


def _day_month(iso_date: str) -> str:
    return f"{iso_date[8:10]}.{iso_date[5:7]}"


def _money(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.2f}"
