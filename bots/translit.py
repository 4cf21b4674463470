"""Ukrainian and Russian typed in Latin letters ("pryvit, mozhna na manikur zavtra?") read back
in Cyrillic, with the language they read as.

Clients type without a scheme: "y", "i" or "j" for й, "h" for both г and х, "ya"/"ja"/"ia"
for я, and they drop the soft sign ("skilky" for "скільки"). So every word is read in each
language by all the spellings in prompts/language/latin.json at once, walking the language's
dictionary (pymorphy3's word graph) letter by letter: a reading that leaves the dictionary is
dropped at once, and the cheapest complete reading (fewest unusual spellings) wins. The
language whose readings cover more of the message wins, Ukrainian on a tie (the salon is in
Kyiv). Words that are names (Olena) are read but prove no language, and a message made mostly
of English words is English: both keep "Olena" or "ok" in an English chat from switching the
bot's language.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Literal

import cyrtranslit

from bots.morph import analyzer
from prompts import load_json

__all__ = ["cyrillic_reading", "read_word"]

Lang = Literal["uk", "ru"]

_LATIN_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)*")
_LATIN = re.compile(r"[A-Za-z]")
_CYRILLIC = re.compile(r"[\u0400-\u04ff]")
_NAMES = frozenset({"Name", "Surn", "Patr"})
_CONSONANTS = frozenset("бвгґджзклмнпрстфхцчшщ")
_MAX_COST = 3  # more unusual spellings than this in one word is a guess, not a reading
_BEAM = 24  # partial readings kept per position: enough for every realistic word tried
_MAX_WORD = 30  # longer "words" are not words (links, keyboard mashing)


@dataclass(frozen=True)
class _Table:
    rules: dict[str, tuple[tuple[str, int], ...]]
    longest: int
    soft: tuple[tuple[str, int], ...]


@cache
def _table(lang: Lang) -> _Table:
    data = load_json("language/latin.json")
    rules = {
        latin: tuple((cyr, int(cost)) for cyr, cost in options)
        for latin, options in data["rules"][lang].items()
    }
    soft = tuple((cyr, int(cost)) for cyr, cost in data["soft"][lang])
    return _Table(rules, max(map(len, rules)), soft)


@cache
def _words() -> dict[str, tuple[str, str]]:
    return {
        latin: (cyr, lang)
        for latin, (cyr, lang) in load_json("language/latin.json")["words"].items()
    }


@cache
def _preferred(lang: Lang) -> dict[str, str]:
    return dict(load_json("language/latin.json")["prefer"].get(lang, {}))


@cache
def _english() -> frozenset[str]:
    return frozenset(load_json("language/latin.json")["english"])


class _Graph:
    """Steps through a language's dictionary of word forms one spelling at a time.

    pymorphy3 keeps its word forms in a DAWG; following it byte by byte tells at once whether
    any word starts with what has been read so far. Should the library change that inner
    structure, `_PlainGraph` reads without pruning (slower, bounded by the beam).
    """

    def __init__(self, lang: Lang) -> None:
        words = analyzer(lang).dictionary.words
        self._follow: Callable[[bytes, int], int | None] = words.dct.follow_bytes
        self._separator: bytes = words._payload_separator
        self.root: int = words.dct.ROOT
        # ё and ґ are stored as such: a typist's "e"/"g" may stand for them.
        self.variants = {"е": ("е", "ё"), "г": ("г", "ґ")}

    def step(self, state: int, text: str) -> int | None:
        return self._follow(text.encode("utf-8"), state)

    def complete(self, state: int) -> bool:
        return self._follow(self._separator, state) is not None


class _PlainGraph:
    def __init__(self, lang: Lang) -> None:
        self._known = analyzer(lang).word_is_known
        self.root = ""
        self.variants: dict[str, tuple[str, ...]] = {}

    def step(self, state: str, text: str) -> str:
        return state + text

    def complete(self, state: str) -> bool:
        return bool(self._known(state))


@cache
def _graph(lang: Lang) -> _Graph | _PlainGraph:
    try:
        graph = _Graph(lang)
        graph.complete(graph.root)
        return graph
    except (AttributeError, TypeError):
        return _PlainGraph(lang)


@lru_cache(maxsize=65536)
def read_word(word: str, lang: Lang) -> tuple[str, int] | None:
    """The cheapest dictionary word this Latin word spells in the language, with its cost."""
    latin = word.lower()
    preferred = _preferred(lang).get(latin)
    if preferred:
        return preferred, 0
    if not latin or len(latin) > _MAX_WORD or not _LATIN_WORD.fullmatch(latin):
        return None
    table, graph = _table(lang), _graph(lang)
    # states[i]: dictionary position -> (cost, Cyrillic so far) after reading latin[:i]
    states: list[dict[object, tuple[int, str]]] = [{} for _ in range(len(latin) + 1)]
    states[0][graph.root] = (0, "")
    for i in range(len(latin)):
        here = states[i]
        if not here:
            continue
        if len(here) > _BEAM:
            kept = sorted(here.items(), key=lambda item: item[1][0])[:_BEAM]
            here = dict(kept)
        for size in range(min(table.longest, len(latin) - i), 0, -1):
            options = table.rules.get(latin[i : i + size])
            if options:
                _advance(graph, table, here, options, states[i + size])
    done = [(cost, text) for state, (cost, text) in states[-1].items() if graph.complete(state)]
    if not done:
        return None
    cost, text = min(done)
    return text, cost


def _advance(
    graph: _Graph | _PlainGraph,
    table: _Table,
    here: dict[object, tuple[int, str]],
    options: tuple[tuple[str, int], ...],
    there: dict[object, tuple[int, str]],
) -> None:
    for state, (cost, text) in here.items():
        for cyr, extra in options:
            total = cost + extra
            if total > _MAX_COST:
                continue
            for spelled in _spellings(graph, cyr):
                after = graph.step(state, spelled)  # type: ignore[arg-type]
                if after is None:
                    continue
                _keep(there, after, total, text + spelled)
                if spelled[-1] in _CONSONANTS:
                    for soft, soft_cost in table.soft:
                        if total + soft_cost <= _MAX_COST:
                            softened = graph.step(after, soft)  # type: ignore[arg-type]
                            if softened is not None:
                                _keep(there, softened, total + soft_cost, text + spelled + soft)


def _spellings(graph: _Graph | _PlainGraph, cyr: str) -> tuple[str, ...]:
    variants = graph.variants.get(cyr[-1]) if cyr else None
    if not variants:
        return (cyr,)
    return tuple(cyr[:-1] + v for v in variants)


def _keep(there: dict[object, tuple[int, str]], state: object, cost: int, text: str) -> None:
    best = there.get(state)
    if best is None or cost < best[0]:
        there[state] = (cost, text)


@lru_cache(maxsize=65536)
def _is_name(cyrillic: str, lang: Lang) -> bool:
    """A word some reading of which is a person's name proves no language ("Olena")."""
    return any(_NAMES & parse.tag.grammemes for parse in analyzer(lang).parse(cyrillic))


@dataclass(frozen=True)
class _Reading:
    score: int  # letters of words that read as this language's non-name words
    cost: int
    words: dict[str, str]


def _is_name_anywhere(word: str) -> bool:
    for lang in ("uk", "ru"):
        reading = read_word(word, lang)  # type: ignore[arg-type]
        if reading is not None and _is_name(reading[0], lang):  # type: ignore[arg-type]
            return True
    return False


def _read(words: list[str], lang: Lang) -> _Reading:
    score = cost = 0
    found: dict[str, str] = {}
    for word in words:
        lower = word.lower()
        special = _words().get(lower)
        if special is not None:
            if special[1] == lang:
                found[lower] = special[0]
                score += len(lower) + 2
            continue
        reading = read_word(lower, lang)
        if reading is None:
            continue
        found[lower] = reading[0]
        cost += reading[1]
        if not _is_name_anywhere(lower):
            score += len(lower)
    return _Reading(score, cost, found)


def cyrillic_reading(text: str) -> tuple[str, Literal["uk", "ru"]] | None:
    """The message in Cyrillic and the language it reads as, or None for English, for text
    that is not mostly Latin letters, and for Latin words that read as nothing (or only as
    names). Digits, punctuation, emoji and times are kept; capitals follow the original.
    """
    try:
        return _cyrillic_reading(text)
    except Exception:  # the bot must answer whatever the client typed
        return None


@lru_cache(maxsize=4096)
def _cyrillic_reading(text: str) -> tuple[str, Literal["uk", "ru"]] | None:
    latin_letters = len(_LATIN.findall(text))
    if latin_letters == 0 or len(_CYRILLIC.findall(text)) >= latin_letters:
        return None
    words = [m.group(0) for m in _LATIN_WORD.finditer(text)]
    english = sum(
        len(w)
        for w in words
        if w.lower() in _english() or _words().get(w.lower(), ("", ""))[1] == "en"
    )
    uk, ru = _read(words, "uk"), _read(words, "ru")
    lang: Lang = "ru" if (ru.score, -ru.cost) > (uk.score, -uk.cost) else "uk"
    best = ru if lang == "ru" else uk
    if best.score == 0 or english >= best.score or 2 * best.score < latin_letters - english:
        return None
    return _rewrite(text, best.words, lang), lang


def _rewrite(text: str, readings: dict[str, str], lang: Lang) -> str:
    def replace(match: re.Match[str]) -> str:
        word = match.group(0)
        lower = word.lower()
        if lower in readings:
            return _same_case(word, readings[lower])
        if lower in _english():
            return word  # an English word inside a Ukrainian message stays as typed
        return _same_case(word, _fallback(lower, lang))

    return _LATIN_WORD.sub(replace, text)


@lru_cache(maxsize=16384)
def _fallback(word: str, lang: Lang) -> str:
    """A word no dictionary knows (a name, a brand): a plain letter-by-letter reading.

    cyrtranslit's Russian scheme reads informal spellings well; its Ukrainian one follows the
    official romanization backwards and reads "zh" as "зг", so Ukrainian takes the cheapest
    spelling of our own table instead.
    """
    if lang == "ru":
        return cyrtranslit.to_cyrillic(word, "ru")
    table = _table(lang)
    out, i = [], 0
    while i < len(word):
        for size in range(min(table.longest, len(word) - i), 0, -1):
            options = table.rules.get(word[i : i + size])
            if options:
                out.append(min(options, key=lambda option: option[1])[0])
                i += size
                break
        else:
            out.append(word[i])
            i += 1
    return "".join(out)


def _same_case(source: str, word: str) -> str:
    if len(source) > 1 and source.isupper():
        return word.upper()
    if source[:1].isupper():
        return word[:1].upper() + word[1:]
    return word
