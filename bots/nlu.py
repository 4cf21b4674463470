"""What a client's message says, for the offline brain: language, day, time, service, master,
intents. Pure functions over the text; the words they know live in prompts/offline/lexicon.json.

Clients write informally in Ukrainian, Russian or English, with typos and mixed alphabets, so
every reader works on `normalize`d text split into words, and matches lexicon entries by whole
words, by stems ("скасув*") and, where a typo is likely and harmless, within one edit.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, time, timedelta
from functools import cache, lru_cache
from itertools import pairwise
from math import log
from typing import Any, Literal, cast

from rapidfuzz.distance import DamerauLevenshtein

from bots import dates
from prompts import load_json

__all__ = [
    "DaySpan",
    "Intent",
    "Language",
    "Named",
    "TimeSpec",
    "detect_intents",
    "detect_language",
    "for_whom",
    "last_day",
    "match_master",
    "match_services",
    "move_target",
    "name_variants",
    "normalize",
    "parse_day",
    "parse_name",
    "parse_ordinal",
    "parse_shift",
    "parse_time",
    "said_as_named",
    "says_all",
    "says_same_day",
    "says_same_time",
    "several_services",
    "unoffered_service",
    "without_kept",
]

Language = Literal["uk", "en", "ru"]
Intent = Literal[
    "greeting",
    "thanks",
    "prices",
    "hours",
    "address",
    "book",
    "reschedule",
    "cancel",
    "my_appointments",
    "human",
    "complaint",
    "sensitive",
    "yes",
    "no",
    "any_master",
    "duration",
    "later",
]
DayPart = Literal["morning", "afternoon", "evening"]
_Role = Literal["at", "after", "before", "between"]

LANGUAGES: tuple[Language, ...] = ("uk", "en", "ru")


@dataclass(frozen=True)
class DaySpan:
    """Local dates, both inclusive; one day has first == last."""

    first: date
    last: date


@dataclass(frozen=True)
class TimeSpec:
    """An exact time (`at`), or a window open on either side (`after`, `before`)."""

    at: time | None = None
    after: time | None = None
    before: time | None = None


@dataclass(frozen=True)
class Named:
    """A service or a master with all its names (uk/en/ru, full and short)."""

    id: int
    names: tuple[str, ...]


# Text ----------------------------------------------------------------------------------------

_CHARS = str.maketrans({"’": "'", "ʼ": "'", "`": "'", "‘": "'", "´": "'", "′": "'", "ё": "е"})
# Latin letters that look like Cyrillic ones: typed from a mixed keyboard ("нiгтi").
_LOOKALIKES = str.maketrans("aceiopxyk", "асеіорхук")
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*")
_CYRILLIC = re.compile(r"[а-яіїєґ]")
_LATIN = re.compile(r"[a-z]")


@lru_cache(maxsize=4096)  # every reader normalises the same message again
def normalize(text: str) -> str:
    """Lowercase, ё as е, one apostrophe, no mixed-alphabet words, single spaces."""
    lowered = text.lower().translate(_CHARS)
    return " ".join(_WORD.sub(_one_alphabet, lowered).split())


def _one_alphabet(match: re.Match[str]) -> str:
    word = match.group(0)
    if _CYRILLIC.search(word) and _LATIN.search(word):
        return word.translate(_LOOKALIKES)
    return word


@dataclass(frozen=True)
class _Token:
    text: str
    kind: Literal["word", "num", "clock", "dash"]
    start: int
    end: int


_TOKEN = re.compile(
    r"(?P<clock>(?<![\d.])\d{1,2}(?:[:.][0-5]\d|-(?:00|[3-5]\d))(?![\d]|[.:]\d))"
    r"|(?P<num>\d+)"
    r"|(?P<word>[^\W\d_]+(?:'[^\W\d_]+)*)"
    r"|(?P<dash>[-–—])"
)


@lru_cache(maxsize=4096)
def _tokens(normalized: str) -> tuple[_Token, ...]:
    found = []
    for m in _TOKEN.finditer(normalized):
        kind = cast(Literal["word", "num", "clock", "dash"], m.lastgroup)
        text = m.group(0)
        if kind == "word" and text.endswith("'s") and text.isascii():
            text = text[:-2]  # "men's haircut" names men
        found.append(_Token(text, kind, m.start(), m.end()))
    return tuple(found)


@lru_cache(maxsize=4096)
def _word_tuple(normalized: str) -> tuple[str, ...]:
    return tuple(t.text for t in _tokens(normalized) if t.kind in ("word", "num"))


def _words(normalized: str) -> list[str]:
    return list(_word_tuple(normalized))  # a list of its own: callers may change it


def _distance(a: str, b: str) -> int:
    return int(DamerauLevenshtein.distance(a, b))


edit_distance = _distance


# Lexicon -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Pattern:
    """Consecutive words; a word ending in * is a stem. Anchored ("^так"): within the first
    two words of a message. Whole ("^any$"): the message is just this."""

    words: tuple[str, ...]
    anchored: bool = False
    whole: bool = False


def _pattern(entry: str) -> _Pattern:
    anchored = entry.startswith("^")
    whole = anchored and entry.endswith("$")
    body = normalize(entry.lstrip("^").rstrip("$"))
    words = tuple(w for w in re.split(r"[\s\-–]+", body) if w)
    return _Pattern(words, anchored, whole)


def _patterns(entries: Iterable[str]) -> tuple[_Pattern, ...]:
    # Longest first: "day after tomorrow" is found before "tomorrow".
    unique = {_pattern(e) for e in entries}
    return tuple(sorted(unique, key=lambda p: (-len(p.words), p.words)))


def _all_languages(node: dict[str, list[str]]) -> list[str]:
    return [entry for lang in LANGUAGES for entry in node.get(lang, [])]


@dataclass(frozen=True)
class _Concept:
    name: str
    words: tuple[_Pattern, ...]
    targets: tuple[_Pattern, ...]
    modifier: bool  # "волосся", "чоловіча": narrows a service down, never names one alone


@dataclass(frozen=True)
class _Vocabulary:
    words: frozenset[str]
    stems: tuple[str, ...]

    def has(self, token: str) -> bool:
        return token in self.words or any(token.startswith(s) for s in self.stems)


@dataclass(frozen=True)
class _Lexicon:
    intents: dict[str, tuple[_Pattern, ...]]
    negations: frozenset[str]
    known: _Vocabulary  # lexicon words are never read as a typo of another word
    lang_words: dict[str, _Vocabulary]
    neutral: frozenset[str]
    lang_phrases: dict[str, tuple[_Pattern, ...]]
    filler: frozenset[str]
    not_service: frozenset[str]
    today: tuple[_Pattern, ...]
    tomorrow: tuple[_Pattern, ...]
    day_after: tuple[_Pattern, ...]
    weekdays: dict[str, int]
    months: dict[str, int]
    months_en: frozenset[str]
    next: tuple[_Pattern, ...]
    this_week: tuple[_Pattern, ...]
    next_week: tuple[_Pattern, ...]
    weekend: tuple[_Pattern, ...]
    in_words: frozenset[str]
    day_units: frozenset[str]
    week_units: frozenset[str]
    counts: dict[str, int]
    day_suffixes: frozenset[str]
    day_of_month_words: frozenset[str]
    date_glue: frozenset[str]
    parts: tuple[tuple[_Pattern, DayPart], ...]
    after_hour_parts: dict[str, DayPart]
    am: frozenset[str]
    pm: frozenset[str]
    roles: dict[tuple[str, ...], _Role]
    word_hours_not_after: frozenset[str]
    range_joiners: frozenset[str]
    hour_nouns: frozenset[str]
    half: frozenset[str]
    half_past: frozenset[str]  # English counts the half after the hour, uk/ru before the next
    half_glue: frozenset[str]
    noon: frozenset[str]
    noon_alone: frozenset[str]
    lunch: frozenset[str]  # "після обіду" is after one, not after noon
    hour_words: dict[str, int]
    not_time_units: tuple[_Pattern, ...]
    hour_words_genitive: frozenset[str]
    durations: tuple[tuple[frozenset[str], frozenset[str]], ...]  # (words before, units)
    concepts: tuple[_Concept, ...]
    name_filler: frozenset[str]
    name_groups: tuple[frozenset[str], ...]
    ordinals: dict[str, int]
    ordinal_suffixes: frozenset[str]
    option_words: frozenset[str]
    ordinal_filler: frozenset[str]
    ordinal_anywhere: dict[str, int]
    name_intros: tuple[_Pattern, ...]
    name_glue: frozenset[str]
    emoji: dict[str, frozenset[str]]  # intent → emoji that say it
    same_time: tuple[_Pattern, ...]
    same_day: tuple[_Pattern, ...]
    all_of_them: tuple[_Pattern, ...]
    instead: tuple[_Pattern, ...]
    instead_of: tuple[_Pattern, ...]
    keep: tuple[_Pattern, ...]
    earlier: tuple[_Pattern, ...]
    later: tuple[_Pattern, ...]
    shift_amounts: tuple[tuple[_Pattern, int], ...]
    appointment_words: tuple[_Pattern, ...]
    without: frozenset[str]
    for_whom: dict[str, frozenset[str]]
    not_offered: tuple[_Pattern, ...]


def _norm_set(entries: Iterable[str]) -> frozenset[str]:
    return frozenset(normalize(e) for e in entries)


def _word_map(groups: Iterable[tuple[int, Iterable[str]]]) -> dict[str, int]:
    return {normalize(word): value for value, words in groups for word in words}


@cache
def _lexicon() -> _Lexicon:
    raw = load_json("offline/lexicon.json")
    days, hours, services = raw["days"], raw["time"], raw["services"]
    intents = {name: _patterns(_all_languages(node)) for name, node in raw["intents"].items()}
    parts = tuple(
        (p, cast(DayPart, part))
        for part, node in hours["day_parts"].items()
        for p in _patterns(_all_languages(node))
    )
    roles: dict[tuple[str, ...], _Role] = {}
    for role, node in hours["roles"].items():
        for p in _patterns(_all_languages(node)):
            roles.setdefault(p.words, cast(_Role, role))
    concepts = tuple(
        _Concept(
            name,
            _patterns(_all_languages(node)),
            _patterns(node["targets"]),
            bool(node.get("modifier", False)),
        )
        for name, node in services["concepts"].items()
    )
    weekdays = _word_map((i, _all_languages(node)) for i, node in enumerate(days["weekdays"]))
    months = _word_map((i + 1, _all_languages(node)) for i, node in enumerate(days["months"]))
    day_words = {
        w
        for key in ("today", "tomorrow", "day_after_tomorrow", "this_week", "next_week", "weekend")
        for p in _patterns(_all_languages(days[key]))
        for w in p.words
    }
    time_words = {w for p, _ in parts for w in p.words} | {w for key in roles for w in key}
    known, lang_words, lang_phrases = _vocabularies(raw)
    return _Lexicon(
        intents=intents,
        negations=_norm_set(raw["negations"]),
        known=known,
        lang_words=lang_words,
        neutral=_norm_set(raw["language_neutral"]),
        lang_phrases=lang_phrases,
        filler=_norm_set(_all_languages(raw["filler"])),
        not_service=frozenset(
            day_words | time_words | set(weekdays) | set(months) | _norm_set(hours["hour_nouns"])
        ),
        today=_patterns(_all_languages(days["today"])),
        tomorrow=_patterns(_all_languages(days["tomorrow"])),
        day_after=_patterns(_all_languages(days["day_after_tomorrow"])),
        weekdays=weekdays,
        months=months,
        months_en=frozenset(normalize(w) for node in days["months"] for w in node["en"]),
        next=_patterns(_all_languages(days["next"])),
        this_week=_patterns(_all_languages(days["this_week"])),
        next_week=_patterns(_all_languages(days["next_week"])),
        weekend=_patterns(_all_languages(days["weekend"])),
        in_words=_norm_set(_all_languages(days["in"])),
        day_units=_norm_set(_all_languages(days["day_units"])),
        week_units=_norm_set(_all_languages(days["week_units"])),
        counts=_word_map((int(k), v) for k, v in days["counts"].items()),
        day_suffixes=_norm_set(days["day_suffixes"]),
        day_of_month_words=_norm_set(days["day_of_month_words"]),
        date_glue=_norm_set(days["date_glue"]),
        parts=tuple(sorted(parts, key=lambda item: -len(item[0].words))),
        after_hour_parts={
            normalize(w): cast(DayPart, part)
            for part, words in hours["after_hour_only"].items()
            for w in words
        },
        am=_norm_set(hours["am"]),
        pm=_norm_set(hours["pm"]),
        roles=roles,
        word_hours_not_after=_norm_set(hours["word_hours_not_after"]),
        range_joiners=_norm_set(hours["range_joiners"]),
        hour_nouns=_norm_set(hours["hour_nouns"]),
        half=_norm_set(_all_languages(hours["half"])),
        half_past=_norm_set(hours["half"]["en"]),
        half_glue=_norm_set(hours["half_glue"]),
        noon=_norm_set(hours["noon"]),
        noon_alone=_norm_set(hours["noon_alone"]),
        lunch=_norm_set(hours["lunch"]),
        hour_words=_word_map((int(k), v) for k, v in hours["hour_words"].items()),
        not_time_units=_patterns(hours["not_time_units"]),
        hour_words_genitive=_norm_set(hours["hour_words_genitive"]),
        durations=tuple((_norm_set(d["after"]), _norm_set(d["units"])) for d in hours["durations"]),
        concepts=concepts,
        name_filler=_norm_set(services["name_filler"]),
        without=_norm_set(_all_languages(services["without"])),
        for_whom={
            k: _norm_set(_all_languages(v))
            for k, v in services["for_whom"].items()
            if not k.startswith("_")
        },
        name_groups=tuple(_norm_set(g) for g in raw["masters"]["name_variants"]),
        ordinals=_word_map(
            (int(k), _all_languages(v)) for k, v in raw["ordinals"]["numbers"].items()
        ),
        ordinal_suffixes=_norm_set(raw["ordinals"]["suffixes"]),
        option_words=_norm_set(_all_languages(raw["ordinals"]["option_words"])),
        ordinal_filler=_norm_set(_all_languages(raw["ordinals"]["filler"])),
        ordinal_anywhere=_word_map(
            (int(k), v) for k, v in raw["ordinals"]["anywhere"].items() if not k.startswith("_")
        ),
        name_intros=_patterns(_all_languages(raw["names"]["intros"])),
        name_glue=_norm_set(_all_languages(raw["names"]["glue"])),
        emoji={k: frozenset(v) for k, v in raw["emoji"].items() if not k.startswith("_")},
        same_time=_patterns(_all_languages(hours["same_time"])),
        same_day=_patterns(_all_languages(hours["same_day"])),
        all_of_them=_patterns(_all_languages(hours["all_of_them"])),
        instead=_patterns(_all_languages(hours["instead"])),
        instead_of=_patterns(_all_languages(hours["instead_of"])),
        keep=_patterns(_all_languages(hours["keep"])),
        earlier=_patterns(_all_languages(hours["shift"]["earlier"])),
        later=_patterns(_all_languages(hours["shift"]["later"])),
        appointment_words=_patterns(_all_languages(hours["shift"]["appointment_words"])),
        shift_amounts=tuple(
            sorted(
                (
                    (p, int(minutes))
                    for minutes, node in hours["shift"]["amounts"].items()
                    for p in _patterns(_all_languages(node))
                ),
                key=lambda item: -len(item[0].words),
            )
        ),
        not_offered=_patterns(_all_languages(services["not_offered"])),
    )


def _vocabularies(
    raw: dict[str, Any],
) -> tuple[_Vocabulary, dict[str, _Vocabulary], dict[str, tuple[_Pattern, ...]]]:
    """Every word and stem of the lexicon, in all and per language. A word that only the uk
    lists hold, or only the ru ones, tells the language where letters do not ("можно",
    "когда" are Russian with no Russian-only letter)."""
    words: dict[str | None, set[str]] = {lang: set() for lang in (*LANGUAGES, None)}
    stems: dict[str | None, set[str]] = {lang: set() for lang in (*LANGUAGES, None)}

    def walk(node: Any, lang: str | None) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if not key.startswith("_"):
                    walk(value, key if key in LANGUAGES else lang)
        elif isinstance(node, list):
            for item in node:
                walk(item, lang)
        elif isinstance(node, str):
            for word in _pattern(node).words:
                into = stems if word.endswith("*") else words
                into[None].add(word.rstrip("*"))
                if lang is not None:
                    into[lang].add(word.rstrip("*"))

    walk({k: v for k, v in raw.items() if k != "language_markers"}, None)
    phrases: dict[str, tuple[_Pattern, ...]] = {}
    for lang in ("uk", "ru"):
        markers = raw["language_markers"][lang]
        words[lang] |= {normalize(m) for m in markers if " " not in m}
        phrases[lang] = _patterns(m for m in markers if " " in m)

    def vocabulary(lang: str | None) -> _Vocabulary:
        return _Vocabulary(frozenset(words[lang]), tuple(sorted(stems[lang])))

    return vocabulary(None), {lang: vocabulary(lang) for lang in ("uk", "ru")}, phrases


# Matching words --------------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def _known(token: str) -> bool:
    return _lexicon().known.has(token)


@lru_cache(maxsize=65536)  # every message is checked against every lexicon entry
def _word_match(token: str, word: str, fuzzy: bool) -> bool:
    if word.endswith("*"):
        stem = word[:-1]
        if token.startswith(stem):
            return True
        # A typo inside a long stem ("скосувати"); short stems would catch other words.
        return (
            fuzzy
            and len(stem) >= 6
            and len(token) >= len(stem) - 1
            and token[0] == stem[0]
            and not _known(token)
            and any(_distance(token[:k], stem) <= 1 for k in range(len(stem) - 1, len(stem) + 2))
        )
    if token == word:
        return True
    return (
        fuzzy
        and len(word) >= 7  # six-letter words are a letter apart from too many others
        and len(token) >= 7
        and token[0] == word[0]
        and not _known(token)
        and _distance(token, word) <= 1
    )


def _find(words: Sequence[str], pattern: _Pattern, *, fuzzy: bool = False) -> Iterator[int]:
    """Start indexes where the pattern's words follow one another in `words`."""
    size = len(pattern.words)
    last = len(words) - size
    if pattern.whole and last != 0:
        return
    if pattern.anchored:
        last = min(last, 1)
    first, rest = pattern.words[0], pattern.words[1:]
    for i in range(last + 1):
        if _word_match(words[i], first, fuzzy) and all(
            _word_match(words[i + 1 + k], w, fuzzy) for k, w in enumerate(rest)
        ):
            yield i


def _follows(words: Sequence[str], i: int, pattern: _Pattern, fuzzy: bool) -> bool:
    """Whether the pattern, its first word already matched at `i`, is found there."""
    size = len(pattern.words)
    last = len(words) - size
    if pattern.whole and last != 0:
        return False
    if pattern.anchored:
        last = min(last, 1)
    return i <= last and all(
        _word_match(words[i + k], w, fuzzy) for k, w in enumerate(pattern.words[1:], 1)
    )


class _PatternIndex:
    """Patterns looked up by their first word: a message's word meets only the patterns that
    can begin with it (the same word, a stem it begins with, or, when fuzzy and the word is
    not in the lexicon, a long word or stem one typo away), instead of every pattern."""

    _MAX_TOKENS = 65536  # distinct words remembered per index before starting over

    def __init__(self, patterns: Sequence[_Pattern]) -> None:
        self.patterns = tuple(patterns)
        self._exact: dict[str, list[int]] = {}
        self._stems: dict[str, list[int]] = {}
        self._typo_words: dict[str, list[tuple[str, int]]] = {}  # first letter → (word, n)
        for n, pattern in enumerate(self.patterns):
            first = pattern.words[0]
            if first.endswith("*"):
                self._stems.setdefault(first[:-1], []).append(n)
                if len(first) - 1 >= 6:
                    self._typo_words.setdefault(first[0], []).append((first, n))
            else:
                self._exact.setdefault(first, []).append(n)
                if len(first) >= 7:
                    self._typo_words.setdefault(first[0], []).append((first, n))
        self._starting: dict[tuple[str, bool], tuple[int, ...]] = {}

    def starting(self, token: str, fuzzy: bool) -> tuple[int, ...]:
        """The numbers of the patterns whose first word matches the token, in order."""
        key = (token, fuzzy)
        found = self._starting.get(key)
        if found is None:
            numbers = set(self._exact.get(token, ()))
            for stem, stem_numbers in self._stems.items():
                if token.startswith(stem):
                    numbers.update(stem_numbers)
            if fuzzy and token:
                for word, n in self._typo_words.get(token[0], ()):
                    if n not in numbers and _word_match(token, word, True):
                        numbers.add(n)
            found = tuple(sorted(numbers))
            if len(self._starting) >= self._MAX_TOKENS:
                self._starting.clear()
            self._starting[key] = found
        return found

    def matches(self, words: Sequence[str], fuzzy: bool) -> Iterator[tuple[int, int]]:
        """(start index, pattern number) for every place a pattern is found, by start index,
        then by the pattern's place in the tuple."""
        for i, token in enumerate(words):
            for n in self.starting(token, fuzzy):
                if _follows(words, i, self.patterns[n], fuzzy):
                    yield i, n


# Indexes of the lexicon's pattern tuples, by identity: the tuple is kept beside its index, so
# its id cannot be reused while the entry lives. A single pattern is cheaper tried alone (and
# is often a tuple made for the call).
_INDEXES: dict[int, tuple[tuple[_Pattern, ...], _PatternIndex]] = {}
_INDEXED_FROM = 2
_MAX_INDEXES = 1024  # the lexicon has about a hundred tuples: more means made per call


def _indexed(patterns: tuple[_Pattern, ...]) -> _PatternIndex:
    entry = _INDEXES.get(id(patterns))
    if entry is None or entry[0] is not patterns:
        if len(_INDEXES) >= _MAX_INDEXES:
            _INDEXES.clear()
        entry = (patterns, _PatternIndex(patterns))
        _INDEXES[id(patterns)] = entry
    return entry[1]


def _pattern_index(patterns: Iterable[_Pattern]) -> _PatternIndex | None:
    if type(patterns) is not tuple or len(patterns) < _INDEXED_FROM:
        return None
    return _indexed(patterns)


def _found(
    words: Sequence[str], patterns: tuple[_Pattern, ...], *, fuzzy: bool = False
) -> list[tuple[int, int]]:
    """(start index, pattern number) of every match of the lexicon's patterns, by start
    index, then by the pattern's place in the tuple."""
    return list(_indexed(patterns).matches(words, fuzzy))


def _first(words: Sequence[str], patterns: Iterable[_Pattern], *, fuzzy: bool = False) -> int:
    """Index of the earliest match of any pattern, or -1."""
    index = _pattern_index(patterns)
    if index is not None:
        return next((i for i, _ in index.matches(words, fuzzy)), -1)
    found = [i for p in patterns for i in _find(words, p, fuzzy=fuzzy)]
    return min(found, default=-1)


def _any(words: Sequence[str], patterns: Iterable[_Pattern], *, fuzzy: bool = False) -> bool:
    index = _pattern_index(patterns)
    if index is not None:
        return next(index.matches(words, fuzzy), None) is not None
    return any(next(_find(words, p, fuzzy=fuzzy), None) is not None for p in patterns)


# Language ------------------------------------------------------------------------------------


@lru_cache(maxsize=16384)
def _in_languages(word: str) -> tuple[bool, bool]:
    """Whether the word is one Ukrainian uses, and one Russian uses."""
    lex = _lexicon()
    return lex.lang_words["uk"].has(word), lex.lang_words["ru"].has(word)


def detect_language(text: str, default: Language = "uk") -> Language:
    """uk, ru or en by the letters, then by words only one of uk/ru uses; `default` when the
    text has no letters or is Cyrillic that fits both."""
    said = normalize(text)
    cyrillic = len(re.findall(r"[а-яіїєґ]", said))
    latin = len(_LATIN.findall(said))
    if cyrillic == 0 and latin == 0:
        return default
    if latin > cyrillic:
        return "en"
    lex = _lexicon()
    words = _words(said)
    uk = len(re.findall(r"[іїєґ]", said)) + len(re.findall(r"(?<=[а-яіїєґ])'(?=[а-яіїєґ])", said))
    ru = len(re.findall(r"[ыэъ]", said)) + text.lower().count("ё")
    for word in words:
        if word in lex.neutral:
            continue
        in_uk, in_ru = _in_languages(word)
        uk += in_uk and not in_ru
        ru += in_ru and not in_uk
    uk += len(_found(words, lex.lang_phrases["uk"]))
    ru += len(_found(words, lex.lang_phrases["ru"]))
    if uk > ru:
        return "uk"
    if ru > uk:
        return "ru"
    return default


# Days ----------------------------------------------------------------------------------------

# A phone number: seven digits or more, maybe with +, spaces, dashes, brackets; never a date
# or a time, so it is blanked out before either is looked for.
_PHONE = re.compile(r"\+?\d(?:[\s\-()]*\d){6,}")
_NUMERIC_DATE = re.compile(r"(?<![\d.:/])(\d{1,2})([./])(\d{1,2})(?:\2(\d{4}|\d{2}))?(?![\d:/])")
# Only these make "о 10.30" a time: "в"/"на" precede dates as often ("на 10.05").
_CLOCK_PREPOSITIONS = frozenset({"о", "об", "at", "around", "близько", "около"})


@dataclass(frozen=True)
class _DateMention:
    start: int
    end: int
    day: int
    month: int | None  # None: "15-го", "the 15th": a day of this or next month
    year: int | None


def _blank(text: str, spans: Iterable[tuple[int, int]]) -> str:
    chars = list(text)
    for start, end in spans:
        chars[start:end] = " " * (end - start)
    return "".join(chars)


def _without_phones(normalized: str) -> str:
    return _blank(normalized, (m.span() for m in _PHONE.finditer(normalized)))


def _word_before(text: str, position: int) -> str:
    before = _WORD.findall(text[:position])
    return before[-1] if before else ""


def _dates(text: str) -> list[_DateMention]:
    """Dates written in the text, in order: "15.03", "15.03.2027", "15/03", "15 березня",
    "15-го марта", "March 15th", "15th of March", "15-го", "15 числа"."""
    lex = _lexicon()
    found: list[_DateMention] = []
    for m in _NUMERIC_DATE.finditer(text):
        day, sep, month, year = int(m.group(1)), m.group(2), int(m.group(3)), m.group(4)
        if not (1 <= day <= 31 and 1 <= month <= 12):
            continue
        if sep == "." and year is None and _word_before(text, m.start()) in _CLOCK_PREPOSITIONS:
            continue  # "о 10.12" is a time
        found.append(_DateMention(m.start(), m.end(), day, month, _year(year)))
    tokens = [t for t in _tokens(text) if t.kind in ("word", "num")]
    taken = {(d.start, d.end) for d in found}
    for i in range(len(tokens)):
        mention = _day_then_month(text, tokens, i, lex) or _month_then_day(text, tokens, i, lex)
        if mention and not any(s <= mention.start < e for s, e in taken):
            found.append(mention)
            taken.add((mention.start, mention.end))
    return sorted(found, key=lambda d: d.start)


def _year(raw: str | None) -> int | None:
    if raw is None:
        return None
    return 2000 + int(raw) if len(raw) == 2 else int(raw)


def _day_number(text: str, token: _Token) -> int | None:
    """A 1..31 that stands alone: not part of "10:30" or "15.03"."""
    if token.kind != "num" or len(token.text) > 2 or not 1 <= int(token.text) <= 31:
        return None
    before = text[token.start - 1] if token.start else " "
    after = text[token.end] if token.end < len(text) else " "
    if (
        before in ":./"
        or after in ":/"
        or (after == "." and text[token.end + 1 : token.end + 2].isdigit())
    ):
        return None
    return int(token.text)


def _attached(text: str, left: _Token, right: _Token) -> bool:
    """ "15-го", "15го", "15th": the suffix is written onto the number."""
    return text[left.end : right.start] in ("", "-")


def _day_then_month(
    text: str, tokens: Sequence[_Token], i: int, lex: _Lexicon
) -> _DateMention | None:
    day = _day_number(text, tokens[i])
    if day is None:
        return None
    j = i + 1
    suffixed = False
    if j < len(tokens) and (
        tokens[j].text in lex.day_of_month_words
        or (tokens[j].text in lex.day_suffixes and _attached(text, tokens[i], tokens[j]))
    ):
        suffixed = True
        j += 1
    while j < len(tokens) and tokens[j].text in lex.date_glue:
        j += 1
    if j < len(tokens) and tokens[j].text in lex.months:
        year = None
        end = tokens[j].end
        if j + 1 < len(tokens) and re.fullmatch(r"20\d\d", tokens[j + 1].text):
            year, end = int(tokens[j + 1].text), tokens[j + 1].end
        return _DateMention(tokens[i].start, end, day, lex.months[tokens[j].text], year)
    if suffixed:
        return _DateMention(tokens[i].start, tokens[i + 1].end, day, None, None)
    return None


def _month_then_day(
    text: str, tokens: Sequence[_Token], i: int, lex: _Lexicon
) -> _DateMention | None:
    # Only English puts the month first ("March 15"); "в березні 2 рази" is not a date.
    if tokens[i].text not in lex.months_en:
        return None
    j = i + 1
    while j < len(tokens) and tokens[j].text in lex.date_glue:
        j += 1
    if j >= len(tokens):
        return None
    day = _day_number(text, tokens[j])
    if day is None:
        return None
    end = tokens[j].end
    if j + 1 < len(tokens) and tokens[j + 1].text in lex.day_suffixes:
        if _attached(text, tokens[j], tokens[j + 1]):
            end = tokens[j + 1].end
    return _DateMention(tokens[i].start, end, day, lex.months[tokens[i].text], None)


def _resolve(mention: _DateMention, today: date) -> date | None:
    if mention.month is None:
        # A day of the month alone: this month, or the next month that has that day.
        year, month = today.year, today.month
        for _ in range(3):
            candidate = _safe_date(year, month, mention.day)
            if candidate is not None and candidate >= today:
                return candidate
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        return None
    if mention.year is not None:
        return _safe_date(mention.year, mention.month, mention.day)
    this_year = _safe_date(today.year, mention.month, mention.day)
    if this_year is not None and this_year >= today:
        return this_year
    return _safe_date(today.year + 1, mention.month, mention.day)


def _safe_date(year: int, month: int, day: int) -> date | None:
    try:
        return date(year, month, day)
    except ValueError:
        return None


def parse_day(text: str, today: date) -> DaySpan | None:
    """The day or days the text asks for, relative to `today` (a local date); None when it
    names none. A date named outright wins over "завтра", which wins over a weekday, which
    wins over "через 3 дні", the weekend and the week."""
    said = _without_phones(normalize(text))
    for mention in _dates(said):
        day = _resolve(mention, today)
        if day is not None:
            return DaySpan(day, day)
    lex = _lexicon()
    words = _words(said)
    for patterns, shift in ((lex.day_after, 2), (lex.tomorrow, 1), (lex.today, 0)):
        if _any(words, patterns):
            return _one(today + timedelta(days=shift))
    monday = today - timedelta(days=today.weekday())
    next_week = _any(words, lex.next_week)
    weekday = _weekday(words, lex, next_week)
    if weekday is not None:
        number, following = weekday
        if following:
            return _one(monday + timedelta(days=7 + number))
        return _one(today + timedelta(days=(number - today.weekday()) % 7))
    shift = _in_days(words, lex)
    if shift is not None:
        return _one(today + timedelta(days=shift))
    weekend = _first(words, lex.weekend)
    if weekend >= 0:
        if next_week or _next_before(words, weekend, lex):
            return DaySpan(monday + timedelta(days=12), monday + timedelta(days=13))
        return DaySpan(max(today, monday + timedelta(days=5)), monday + timedelta(days=6))
    if next_week:
        return DaySpan(monday + timedelta(days=7), monday + timedelta(days=13))
    if _any(words, lex.this_week):
        return DaySpan(today, monday + timedelta(days=6))
    read = dates.read_day(text, today)  # what the rules leave: "березня 15", "in April"
    return DaySpan(*read) if read else None


def _one(day: date) -> DaySpan:
    return DaySpan(day, day)


def _weekday(words: Sequence[str], lex: _Lexicon, next_week: bool) -> tuple[int, bool] | None:
    """The first weekday named (0 = Monday) and whether it is the one of next week."""
    for i, word in enumerate(words):
        if word in lex.weekdays:
            return lex.weekdays[word], next_week or _next_before(words, i, lex)
    return None


def _next_before(words: Sequence[str], i: int, lex: _Lexicon) -> bool:
    """ "next Friday", "наступної п'ятниці", "в следующую пятницу"."""
    window = words[max(0, i - 2) : i]
    return _any(window, lex.next)


def _in_days(words: Sequence[str], lex: _Lexicon) -> int | None:
    """ "через 3 дні", "через два тижні", "in a week" as a number of days."""
    for i, word in enumerate(words):
        if word not in lex.in_words:
            continue
        count, j = 1, i + 1
        number = words[j] if j < len(words) else ""
        if number.isdigit() or number in lex.counts:
            count = int(number) if number.isdigit() else lex.counts[number]
            j += 1
        elif j < len(words) and words[j] in lex.day_units:
            continue  # "через день" says "every other day" as often as "tomorrow"
        unit = words[j] if j < len(words) else ""
        if unit in lex.day_units:
            return count
        if unit in lex.week_units:
            return 7 * count
    return None


# Times ---------------------------------------------------------------------------------------

_PART_SPANS: dict[DayPart, tuple[time | None, time | None]] = {
    "morning": (None, time(12)),
    "afternoon": (time(12), time(17)),
    "evening": (time(17), None),
}
_AMPM = re.compile(r"\b([ap])\.\s?m\b\.?")


@dataclass
class _Hour:
    """An hour read from the text, before the salon's reading of bare hours."""

    first: int  # token indexes it spans
    last: int
    hour: int
    minute: int = 0
    exact: bool = False  # a time by its form: "10:30", "пів на третю"
    literal: bool = False  # "08:30", noon: read as written
    word: bool = False  # "о третій": a word, so it needs a preposition
    role: _Role | None = None
    marker: DayPart | Literal["am", "pm"] | None = None
    accepted: bool = False
    rejected: bool = False  # a count or an amount ("на 2 людини"), never a time


def parse_time(text: str) -> TimeSpec | None:
    """The time the text asks for; None when it names none.

    A bare hour 1..8 without "ранку"/"am"/"morning" is afternoon (a salon's day): "о 3" is
    15:00, "о 10" is 10:00, "8:30" is 20:30 but "08:30" is 8:30. Dates and phone numbers are
    never read as times.
    """
    lex = _lexicon()
    said = _AMPM.sub(r"\1m", normalize(text))
    said = _without_phones(said)
    said = _blank(said, ((d.start, d.end) for d in _dates(said)))
    said = _hour_after_day(_spoken_clocks(said), lex)
    tokens = _tokens(said)
    words = [t.text for t in tokens]
    # "Добрий вечір" greets, it does not ask for the evening.
    ignored = _greeting_indexes(words, lex)
    # "у першій половині дня" is the morning, not one o'clock.
    hours = _hour_candidates(tokens, lex, ignored | _part_phrase_indexes(words, lex))
    used_markers = _read_context(tokens, hours, lex, ignored)
    _join_ranges(tokens, hours, lex)
    global_part = _global_part(words, lex, ignored | used_markers)
    # "не в час, а в 10": the time said with "not" is the one the client does not want.
    accepted = [h for h in hours if h.accepted and not _negated_at(words, h.first, lex)]
    if not accepted:
        if global_part is None:
            return None
        after, before = _PART_SPANS[global_part]
        return TimeSpec(after=after, before=before)
    at: list[time] = []
    after_: list[time] = []
    before_: list[time] = []
    for h in accepted:
        if h.role == "before" and tokens[h.first].text in lex.lunch:
            h.hour = 12  # "до обіду" is the morning; "після обіду" starts at one
        clock = _clock(h, h.marker or _applies(global_part, h))
        if clock is None:
            continue
        if h.role in ("after", "between"):
            after_.append(clock)
        elif h.role == "before":
            before_.append(clock)
        else:
            at.append(clock)
    if at:
        return TimeSpec(at=at[0])
    if not after_ and not before_:
        return None
    after, before = max(after_, default=None), min(before_, default=None)
    if global_part is not None:
        after, before = _narrow(after, before, _PART_SPANS[global_part])
    return TimeSpec(after=after, before=before)


_SPACED_CLOCK = re.compile(r"(?<![\d:.,])([01]?\d|2[0-3]) ([0-5]\d)(?![\d:.,])")
# Russian "полчетвертого": half of the fourth hour, 3:30.
_HOUR_ORDINALS_RU = (
    "первого",
    "второго",
    "третьего",
    "четвертого",
    "пятого",
    "шестого",
    "седьмого",
    "восьмого",
    "девятого",
    "десятого",
    "одиннадцатого",
    "двенадцатого",
)
_HALF_BEFORE = re.compile(r"\bпол ?(" + "|".join(_HOUR_ORDINALS_RU) + r")\b")
_HOUR_ORDINALS = {w: i + 1 for i, w in enumerate(_HOUR_ORDINALS_RU)}


def _spoken_clocks(said: str) -> str:
    """Times written the way people type or dictate them, as clock tokens: "17 30" is 17:30,
    Russian "полчетвертого" (half of the fourth hour) is 3:30."""
    said = _SPACED_CLOCK.sub(r"\1:\2", said)
    return _HALF_BEFORE.sub(lambda m: f"{_HOUR_ORDINALS[m.group(1)] - 1 or 12}:30", said)


def _negated_at(words: Sequence[str], first: int, lex: _Lexicon) -> bool:
    glue = _CLOCK_PREPOSITIONS | {"в", "у", "на", "for", "by"}
    before = [w for w in words[max(0, first - 3) : first] if w not in glue]
    return bool(before) and before[-1] in lex.negations


def _hour_after_day(said: str, lex: _Lexicon) -> str:
    """ "sunday 11", "в суботу 13", "завтра 15": a bare number right after a day is the hour
    (a day of the month comes before a month name, and is blanked out before this)."""
    words = _day_words()

    def clock(match: re.Match[str]) -> str:
        hour = int(match.group(2))
        if match.group(1) not in words or not 7 <= hour <= 23:
            return match.group(0)
        return f"{match.group(1)} {hour}:00"

    return _DAY_THEN_NUMBER.sub(clock, said)


_DAY_THEN_NUMBER = re.compile(
    r"([^\W\d_]+'?[^\W\d_]*),?\s+(\d{1,2})(?![\d:.,/]|\s*(?:-?(?:го|е|th))\b)"
)


@cache
def _day_words() -> frozenset[str]:
    lex = _lexicon()
    single = {p.words[0] for p in (*lex.today, *lex.tomorrow, *lex.day_after) if len(p.words) == 1}
    return frozenset(set(lex.weekdays) | single)


@cache
def _part_patterns() -> tuple[_Pattern, ...]:
    """The patterns of `lex.parts`, in its order, for `_found`."""
    return tuple(pattern for pattern, _ in _lexicon().parts)


def _part_phrase_indexes(words: Sequence[str], lex: _Lexicon) -> set[int]:
    found: set[int] = set()
    patterns = _part_patterns()
    for i, n in _found(words, patterns):
        if len(patterns[n].words) >= 3:
            found.update(range(i, i + len(patterns[n].words)))
    return found


def _greeting_indexes(words: Sequence[str], lex: _Lexicon) -> set[int]:
    found: set[int] = set()
    patterns = lex.intents["greeting"]
    for i, n in _found(words, patterns):
        found.update(range(i, i + len(patterns[n].words)))
    return found


def _hour_candidates(tokens: Sequence[_Token], lex: _Lexicon, ignored: set[int]) -> list[_Hour]:
    hours: list[_Hour] = []
    i = 0
    while i < len(tokens):
        if i in ignored:
            i += 1
            continue
        found = _hour_at(tokens, i, lex)
        if found is not None:
            hours.append(found)
            i = found.last + 1
        else:
            i += 1
    return hours


def _hour_at(tokens: Sequence[_Token], i: int, lex: _Lexicon) -> _Hour | None:
    token = tokens[i]
    if token.kind == "clock":
        h, m = (int(x) for x in re.split(r"[:.\-]", token.text))
        if h > 23:
            return None
        return _Hour(i, i, h, m, exact=True, literal=token.text.startswith("0"))
    if token.kind == "num":
        if len(token.text) > 2 or int(token.text) > 24:
            return None
        return _Hour(i, i, int(token.text), literal=token.text.startswith("0"))
    if token.text in lex.half:
        return _half(tokens, i, lex)
    if token.text in lex.noon:
        hour = 13 if token.text in lex.lunch else 12
        return _Hour(i, i, hour, literal=True, word=token.text not in lex.noon_alone)
    if token.text in lex.noon_alone:
        return _Hour(i, i, 12, literal=True)
    if token.text in lex.hour_words:
        return _Hour(i, i, lex.hour_words[token.text], word=True)
    return None


def _half(tokens: Sequence[_Token], i: int, lex: _Lexicon) -> _Hour | None:
    """ "пів на третю", "пів третьої", "половина третьего" are 2:30; "half past two" and the
    British "half two" are 2:30 as well."""
    j = i + 1
    glue = tokens[j].text if j < len(tokens) else ""
    if glue in lex.half_glue:
        j += 1
    if j >= len(tokens):
        return None
    target = tokens[j]
    if target.kind == "num" and 1 <= int(target.text) <= 12:
        value = int(target.text)
    elif target.text in lex.hour_words:
        value = lex.hour_words[target.text]
    else:
        return None
    hour = value if tokens[i].text in lex.half_past else (value - 1 or 12)
    return _Hour(i, j, hour, 30, exact=True)


def _role_before(words: Sequence[str], first: int, lex: _Lexicon) -> _Role | None:
    for size in (3, 2, 1):
        if first - size >= 0:
            role = lex.roles.get(tuple(words[first - size : first]))
            if role is not None:
                return role
    return None


def _read_context(
    tokens: Sequence[_Token], hours: list[_Hour], lex: _Lexicon, ignored: set[int]
) -> set[int]:
    """Fill in each hour's preposition and the "вечора"/"pm" written after it, and decide
    whether it is a time at all. Returns the indexes of the words used as such markers."""
    words = [t.text for t in tokens]
    used: set[int] = set()
    for h in hours:
        h.role = _role_before(words, h.first, lex)
        after = h.last + 1
        while after < len(words) and words[after] in lex.hour_nouns:
            after += 1
        unit = words[after] if after < len(words) else ""
        if _any([unit], lex.not_time_units) or _is_duration(words, h, lex):
            h.rejected = True  # "на 2 людини", "50 грн", "через 2 години"
            continue
        marker, size = _marker_at(words, after, lex, ignored)
        if marker is not None:
            h.marker = marker
            used.update(range(after, after + size))
        if h.word and (h.role is None or words[h.first - 1] in lex.word_hours_not_after):
            continue  # "три" alone is a count; "о третій" is a time
        if h.role == "at" and words[h.first] in lex.hour_words_genitive:
            continue  # "після двох" is a time, "на двох" is two people
        if h.word and unit and tokens[after].kind == "word" and not _known(unit):
            continue  # "в три етапи": a number word before a noun counts that noun
        alone = all(
            t.kind == "dash"
            or k in range(h.first, h.last + 1)
            or k in used
            or t.text in lex.hour_nouns
            for k, t in enumerate(tokens)
        )
        h.accepted = h.exact or h.role is not None or h.marker is not None or alone
    return used


def _is_duration(words: Sequence[str], h: _Hour, lex: _Lexicon) -> bool:
    """ "через 2 години", "на 2 години", "in 3 hours": how long, not when ("о 2 годині" is
    when)."""
    before = words[h.first - 1] if h.first > 0 else ""
    unit = words[h.last + 1] if h.last + 1 < len(words) else ""
    return any(before in words_ and unit in units for words_, units in lex.durations)


def _marker_at(
    words: Sequence[str], i: int, lex: _Lexicon, ignored: set[int]
) -> tuple[DayPart | Literal["am", "pm"] | None, int]:
    if i >= len(words) or i in ignored:
        return None, 0
    if words[i] in lex.am:
        return "am", 1
    if words[i] in lex.pm:
        return "pm", 1
    if words[i] in lex.after_hour_parts:
        return lex.after_hour_parts[words[i]], 1
    for pattern, part in lex.parts:
        if next(_find(words[i : i + len(pattern.words)], pattern), None) == 0:
            return part, len(pattern.words)
    return None, 0


def _join_ranges(tokens: Sequence[_Token], hours: list[_Hour], lex: _Lexicon) -> None:
    """ "10-12", "з 10 до 12", "between 10 and 12", "from 10 to 12": after one, before the
    other."""
    for a, b in pairwise(hours):
        between = tokens[a.last + 1 : b.first]
        if len(between) != 1:
            continue
        joiner = between[0]
        if joiner.kind != "dash" and joiner.text not in lex.range_joiners:
            continue
        if a.role not in (None, "at", "after", "between") or b.role not in (None, "before"):
            continue
        if a.rejected or b.rejected or ((a.word or b.word) and not (a.accepted and b.accepted)):
            continue  # "2-3 людини", "два-три" are counts
        a.role, b.role = "after", "before"
        a.accepted = b.accepted = True
        if a.marker is None and a.hour <= b.hour:
            a.marker = b.marker  # "з 5 до 7 вечора", "2-4pm"


def _global_part(words: Sequence[str], lex: _Lexicon, ignored: set[int]) -> DayPart | None:
    """The first part of the day named on its own ("ввечері", "in the morning")."""
    # The earliest, and of those the first in the lexicon: _found's own order.
    for i, n in _found(words, _part_patterns()):
        pattern, part = lex.parts[n]
        if not any(k in ignored for k in range(i, i + len(pattern.words))):
            return part
    return None


def _applies(part: DayPart | None, h: _Hour) -> DayPart | None:
    """A part of the day said elsewhere in the message, as it bears on this hour: "вранці о 7"
    is 7:00, but "в суботу після 3 або в неділю зранку" still means 15:00 on Saturday."""
    if part == "morning" and h.hour < 6:
        return None
    return part


def _clock(h: _Hour, marker: DayPart | Literal["am", "pm"] | None) -> time | None:
    hour = h.hour
    if not h.literal:
        if marker == "am":
            hour = 0 if hour == 12 else hour
        elif marker in ("pm", "evening"):
            hour = hour + 12 if hour < 12 else hour
        elif marker in ("afternoon", None) and 1 <= hour <= 8:
            hour += 12  # the salon's day: "о 3" is 15:00, "до 8" is 20:00
    if hour == 24 and h.minute == 0:
        return None
    if not 0 <= hour <= 23:
        return None
    return time(hour, h.minute)


def _narrow(
    after: time | None, before: time | None, span: tuple[time | None, time | None]
) -> tuple[time | None, time | None]:
    """ "ввечері до 8": the explicit bound within the part of the day, unless they clash."""
    low = max((t for t in (after, span[0]) if t is not None), default=None)
    high = min((t for t in (before, span[1]) if t is not None), default=None)
    if low is not None and high is not None and low >= high:
        return after, before
    return low, high


# Services ------------------------------------------------------------------------------------

_MIN_SCORE = 40.0  # below this a service shares only a weak word with the text
_CONCEPT_STRENGTH = 0.95  # a synonym ("нігті" for "манікюр") counts as a case form of a word


@dataclass(frozen=True)
class _IndexedService:
    id: int
    names: tuple[tuple[str, ...], ...]  # content words of each name
    words: frozenset[str]
    concepts: frozenset[str]
    word_concepts: dict[str, frozenset[str]]


class _Catalogue:
    """A price list's services indexed for matching, and how well each word of the messages
    read so far matches each of them: the same words come again and again."""

    _MAX_WORDS = 65536

    def __init__(self, services: tuple[_IndexedService, ...]) -> None:
        self.services = services
        self._direct: dict[str, tuple[float, ...]] = {}
        self._covers: dict[str, tuple[frozenset[str], ...]] = {}

    def direct(self, said: str) -> tuple[float, ...]:
        """How surely the word is a word of each service's names, in the services' order."""
        found = self._direct.get(said)
        if found is None:
            found = tuple(
                max((_similarity(said, n) for n in s.words), default=0.0) for s in self.services
            )
            if len(self._direct) >= self._MAX_WORDS:
                self._direct.clear()
            self._direct[said] = found
        return found

    def covers(self, said: str) -> tuple[frozenset[str], ...]:
        """The words of each service's names the word stands for, itself or by a concept."""
        found = self._covers.get(said)
        if found is None:
            concepts = _said_concepts(said)
            found = tuple(
                frozenset(
                    n for n in s.words if _similarity(said, n) > 0 or concepts & s.word_concepts[n]
                )
                for s in self.services
            )
            if len(self._covers) >= self._MAX_WORDS:
                self._covers.clear()
            self._covers[said] = found
        return found


@lru_cache(maxsize=64)  # one per version of the price list, so a changed one is indexed anew
def _index(services: tuple[Named, ...]) -> _Catalogue:
    lex = _lexicon()
    indexed = []
    for service in services:
        names = tuple(
            tuple(
                w for w in _words(normalize(name)) if w not in lex.name_filler and not w.isdigit()
            )
            for name in service.names
        )
        words = frozenset(w for name in names for w in name)
        word_concepts = {w: _name_concepts(w) for w in words}
        concepts = frozenset(c for cs in word_concepts.values() for c in cs)
        indexed.append(_IndexedService(service.id, names, words, concepts, word_concepts))
    return _Catalogue(tuple(indexed))


@lru_cache(maxsize=16384)
def _said_concepts(word: str) -> frozenset[str]:
    """The concepts a word of a message says, typos included ("нігті", "ногти")."""
    return frozenset(c.name for c in _lexicon().concepts if _any([word], c.words, fuzzy=True))


@lru_cache(maxsize=16384)
def _name_concepts(word: str) -> frozenset[str]:
    """The concepts a word of a service name stands for."""
    return frozenset(c.name for c in _lexicon().concepts if _any([word], c.targets))


@cache
def _modifiers() -> frozenset[str]:
    return frozenset(c.name for c in _lexicon().concepts if c.modifier)


_ENDINGS = tuple(
    sorted(
        (
            "ією ієм ией ою ею єю ій ей ий ія ії ію ия ии ию ея ем єм ом ой ові еві ому ах ям "
            "ами ями ів ов ам а я і и ы у ю е є ї й ь о"
        ).split(),
        key=len,
        reverse=True,
    )
)


def _stem(word: str) -> str:
    """A Cyrillic word without its case ending ("Олени" → "олен", "стрижку" → "стрижк")."""
    if not _CYRILLIC.search(word):
        return word
    for ending in _ENDINGS:
        if word.endswith(ending) and len(word) - len(ending) >= 3:
            return word[: -len(ending)]
    return word


@lru_cache(maxsize=16384)
def _similarity(said: str, name_word: str) -> float:
    """How surely a word of the text is a word of a service name, 0..1."""
    if said == name_word:
        return 1.0
    shorter = min(len(said), len(name_word))
    if shorter >= 4 and _stem(said) == _stem(name_word):
        return 0.95
    if _common_prefix(said, name_word) >= max(5, shorter - 2):
        return 0.9  # "фарбувати" / "фарбування"
    if shorter >= 5 and said[0] == name_word[0]:
        if _distance(said, name_word) <= (2 if shorter >= 8 else 1):
            return 0.85  # "манікур", "педікюр"
    return 0.0


def _common_prefix(a: str, b: str) -> int:
    size = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        size += 1
    return size


def match_services(
    text: str, services: Sequence[Named], *, limit: int = 3
) -> list[tuple[int, float]]:
    """Services the text names, best first, as (id, score 0..100); empty when none fits.

    A word rare in the catalogue counts more than a common one, so "чоловіча стрижка" puts
    the men's haircut well above the women's, while "стрижка" scores both alike (the dialogue
    asks which). Scores within a few points of each other are equally good answers.
    """
    lex = _lexicon()
    catalogue = _index(tuple(Named(s.id, tuple(s.names)) for s in services))
    indexed = catalogue.services
    words = _words(normalize(text))
    # "манікюр без покриття", "no polish": the word after "without" is what is not wanted.
    unwanted = {i + 1 for i, w in enumerate(words) if w in lex.without}
    said = [
        w
        for i, w in enumerate(words)
        if i not in unwanted
        and not w.isdigit()
        and len(w) >= 2
        and w not in lex.filler
        and w not in lex.not_service
        and w not in lex.without
    ]
    if not said or not indexed:
        return []
    match = _WordMatches.of(said, catalogue)
    weights = match.weights(indexed)
    if not weights:
        return []
    total = sum(weights.values())
    scored: list[tuple[int, float]] = []
    for service in indexed:
        if not match.names(service, lex):
            continue
        said_part = sum(w * match.strength[word, service.id] for word, w in weights.items())
        name_part = max(
            (match.coverage(name, service) for name in service.names if name), default=0
        )
        score = round(100 * (0.9 * said_part / total + 0.1 * name_part), 1)
        if score >= _MIN_SCORE:
            scored.append((service.id, score))
    scored.sort(key=lambda item: -item[1])
    return scored[:limit]


@dataclass(frozen=True)
class _WordMatches:
    """How each word of the text matches each service: by itself (`direct`: the name has the
    word, a case form or a typo of it) or through a lexicon concept (`strength`)."""

    said: tuple[str, ...]
    concepts: dict[str, frozenset[str]]
    direct: dict[tuple[str, int], float]
    strength: dict[tuple[str, int], float]
    covered: dict[int, frozenset[str]]  # service id → the words of its names the text covers

    @classmethod
    def of(cls, said: Sequence[str], catalogue: _Catalogue) -> _WordMatches:
        indexed = catalogue.services
        concepts = {w: _said_concepts(w) for w in said}
        direct = {
            (w, s.id): score
            for w in said
            for s, score in zip(indexed, catalogue.direct(w), strict=True)
        }
        strength = {
            (w, s.id): max(direct[w, s.id], _CONCEPT_STRENGTH if concepts[w] & s.concepts else 0)
            for w in said
            for s in indexed
        }
        covered = {
            s.id: frozenset().union(*(catalogue.covers(w)[k] for w in said))
            for k, s in enumerate(indexed)
        }
        return cls(tuple(said), concepts, direct, strength, covered)

    def weights(self, indexed: Sequence[_IndexedService]) -> dict[str, float]:
        """Words that match some service, the rarer in the catalogue the heavier."""
        weights = {}
        for w in self.said:
            hits = sum(1 for s in indexed if self.strength[w, s.id] > 0)
            if hits:
                weights[w] = 1.0 + log(len(indexed) / hits)
        return weights

    def names(self, service: _IndexedService, lex: _Lexicon) -> bool:
        """Whether the text names the service at all: a modifier ("волосся") alone does not."""
        modifiers = _modifiers()
        return any(
            self.direct[w, service.id] or (self.concepts[w] - modifiers) & service.concepts
            for w in self.said
        )

    def coverage(self, name: Sequence[str], service: _IndexedService) -> float:
        """The share of a name's words the text covers: "Манікюр класичний" is all of
        "класичний манікюр" and half of "манікюр"."""
        covered = sum(1 for n in name if n in self.covered[service.id])
        return covered / len(name)


# Masters -------------------------------------------------------------------------------------

_TO_LATIN = str.maketrans(
    {
        "а": "a", "б": "b", "в": "v", "г": "h", "ґ": "h", "д": "d", "е": "e", "є": "ie",
        "ж": "zh", "з": "z", "и": "i", "і": "i", "ї": "i", "й": "i", "к": "k", "л": "l",
        "м": "m", "н": "n", "о": "o", "п": "p", "р": "r", "с": "s", "т": "t", "у": "u",
        "ф": "f", "х": "h", "ц": "ts", "ч": "ch", "ш": "sh", "щ": "shch", "ь": "", "ъ": "",
        "ы": "i", "э": "e", "ю": "iu", "я": "ia", "'": "",
    }
)  # fmt: skip
_LATIN_SPELLINGS = (("kh", "h"), ("ph", "f"), ("ck", "k"), ("y", "i"), ("j", "i"), ("g", "h"),
                    ("c", "k"), ("w", "v"), ("q", "k"), ("x", "ks"))  # fmt: skip


def _skeleton(word: str) -> str:
    """One Latin spelling for Ukrainian, Russian and English spellings of a name:
    "Ірина", "Ирина", "Iryna", "Irina" all come out close to "irina"."""
    latin = word.translate(_TO_LATIN)
    for old, new in _LATIN_SPELLINGS:
        latin = latin.replace(old, new)
    return latin


def _name_forms(word: str) -> set[str]:
    return {_skeleton(word), _skeleton(_stem(word))}


@lru_cache(maxsize=16384)
def _name_similarity(said: str, name_word: str) -> float:
    ours, theirs = _name_forms(said), _name_forms(name_word)
    if any(len(a) >= 3 and a == b for a in ours for b in theirs):
        return 1.0
    # A typo, not another name: "Саша" is not "Маша", so the first letter must agree.
    if any(
        len(a) >= 5 and len(b) >= 5 and a[0] == b[0] and _distance(a, b) <= 1
        for a in ours
        for b in theirs
    ):
        return 0.85
    return 0.0


@lru_cache(maxsize=1024)
def _variants(word: str) -> frozenset[str]:
    """The name itself and its other-language and short forms ("Олена": "Елена", "Лена")."""
    found = {word}
    for group in _lexicon().name_groups:
        if word in group or _stem(word) in {_stem(g) for g in group}:
            found |= group
    return frozenset(found)


@lru_cache(maxsize=4096)
def _name_words(name: str) -> tuple[str, ...]:
    """The words of a service's or master's name: the catalogue's, read once, not per message."""
    return _word_tuple(normalize(name))


def match_master(text: str, masters: Sequence[Named]) -> int | None:
    """The master the text names, in any case form or alphabet ("до Олени", "к Ирине",
    "with Olena", "Мельник"); None when none is named or two fit equally."""
    lex = _lexicon()
    said = [
        w
        for w in _words(normalize(text))
        if len(w) >= 3 and not w.isdigit() and w not in lex.filler and w not in lex.not_service
    ]
    if not said:
        return None
    scores: dict[int, float] = {}
    for master in masters:
        name_words = {w for name in master.names for w in _name_words(name) if len(w) >= 2}
        total = 0.0
        for name_word in name_words:
            total += max(_name_similarity(w, f) for w in said for f in _variants(name_word))
        if total > 0:
            scores[master.id] = max(scores.get(master.id, 0.0), total)
    if not scores:
        return None
    best = max(scores.values())
    winners = [i for i, score in scores.items() if score == best]
    return winners[0] if len(winners) == 1 else None


# Choosing from a list ------------------------------------------------------------------------


def parse_ordinal(text: str) -> int | None:
    """Which of the options the bot listed a short reply picks, 1-based ("другий", "the
    second one", "2-й варіант", "the 3rd"), or -1 for the last; None when the message says
    more than that. A form that is also an hour ("третій", "другу": "о третій" is 3 pm)
    counts only next to an option word ("третій варіант")."""
    lex = _lexicon()
    tokens = [t for t in _tokens(normalize(text)) if t.kind != "dash"]
    words = [t.text for t in tokens if t.text not in lex.ordinal_filler]
    named = [w for w in words if w in lex.option_words]
    rest = [w for w in words if w not in lex.option_words]
    if len(rest) == 2 and rest[0].isdigit() and rest[1] in lex.ordinal_suffixes:
        rest = rest[:1]  # "2nd", "2-й": the number with its suffix
    if len(rest) != 1:
        anywhere = {lex.ordinal_anywhere[w] for w in rest if w in lex.ordinal_anywhere}
        return anywhere.pop() if len(anywhere) == 1 else None
    word = rest[0]
    if word.isdigit() and len(words) > 1:
        return int(word) if 1 <= int(word) <= 9 else None  # "2nd one", "2-й варіант"
    if word not in lex.ordinals:
        return None
    if word in lex.hour_words and not named:
        return None
    return lex.ordinals[word]


# Names -----------------------------------------------------------------------------------------

_NAME_WORD = re.compile(r"^[^\W\d_]{2,20}(?:[-'][^\W\d_]{2,20})?$")


def parse_name(text: str, *, expected: bool = False) -> str | None:
    """The client's name when the message gives it: "Мене звати Ірина", "I'm Kate", "это
    Оля". `expected`: the bot has just asked for the name and phone, so a bare "Ірина
    Коваль, 0671234567" is a name too. Words the bot knows (a day, a service, "так") are
    never a name; at most three words, each capitalised as written."""
    lex = _lexicon()
    raw = _PHONE.sub(" ", text)
    words = _words(normalize(raw))
    originals = {w.lower().translate(_CHARS): w for w in _WORD.findall(raw)}
    start, capital = None, False
    # The first intro in the lexicon's order that the message has, at its earliest place.
    found = min(((n, i) for i, n in _found(words, lex.name_intros)), default=None)
    if found is not None:
        pattern = lex.name_intros[found[0]]
        start, capital = found[1] + len(pattern.words), pattern.anchored
    if start is None:
        if not expected:
            return None
        start = 0
        # Asked for, a bare name still looks like one: written with a capital letter, or
        # beside the phone ("оксана 067…"); "wait how much" is a question, not a name.
        capital = raw == text
    picked: list[str] = []
    for word in words[start:]:
        if word in lex.name_glue and not picked:
            continue
        if word.isdigit() or not _NAME_WORD.match(word) or _not_a_name(word):
            break
        written = originals.get(word, word)
        if capital and not picked and not written[:1].isupper():
            return None  # "це дорого", "I am looking for…"
        picked.append(written)
        if len(picked) == 3:
            break
    if not picked or (start == 0 and len(words) > len(picked) + 2):
        return None  # a sentence, not a name
    return " ".join(w[:1].upper() + w[1:] for w in picked)


@lru_cache(maxsize=4096)
def _not_a_name(word: str) -> bool:
    """A word the bot reads as something else ("так", "завтра", "манікюр"). First names
    the lexicon knows as masters' are names all the same: a client may be an Ірина too;
    short stems ("ок*") would block too many names, so only long ones count."""
    lex = _lexicon()
    if any(word in group for group in lex.name_groups):
        return False
    if word in lex.name_glue or word in lex.known.words:
        return True
    return any(len(stem) >= 5 and word.startswith(stem) for stem in lex.known.stems)


def name_variants(first_name: str) -> tuple[str, ...]:
    """The spellings of a first name across languages ("Ірина", "Ирина", "Iryna"), lower case,
    as prompts/offline/lexicon.json lists them; just the name when it lists none."""
    said = normalize(first_name)
    for group in load_json("offline/lexicon.json")["masters"]["name_variants"]:
        if said in group:
            return tuple(group)
    return (said,)


def last_day(text: str, today: date) -> DaySpan | None:
    """The day named last: in "з сьогодні на середу", "from Friday to Monday" the visit
    moves to the second."""
    lex = _lexicon()
    words = normalize(text).split()
    for i in range(len(words) - 1, -1, -1):
        found = parse_day(" ".join(words[i:]), today)
        if found is not None:
            # "на наступну середу": the words just before may say which week.
            for back in range(max(0, i - 2), i):
                if _any(words[back:i], lex.next) or _any(words[back:i], lex.next_week):
                    return parse_day(" ".join(words[back:]), today) or found
            return found
    return None


_CLAUSES = re.compile(r"[,.;!?]+|\s(?:а|але|но|but|and|і|и|та)\s")


def without_kept(text: str) -> str:
    """The text without its clauses about an appointment the client keeps: of "cancel my
    Saturday one, the brow one next week stays" what is left names the one to cancel."""
    lex = _lexicon()
    parts = [p for p in _CLAUSES.split(text) if p.strip()]
    kept = [p for p in parts if not _any(_words(normalize(p)), lex.keep)]
    return " ".join(kept) if kept and len(kept) < len(parts) else text


def move_target(text: str) -> str:
    """The part of a message asking for a move that says where to: after the last "move",
    "instead", "could we do", when a day or a time is named there; else the whole text."""
    lex = _lexicon()
    lowered = normalize(text)
    words = _words(lowered)
    cut = -1
    for pattern in (*lex.intents["reschedule"], *lex.instead):
        for i in _find(words, pattern):
            cut = max(cut, i + len(pattern.words))
    if cut <= 0 or cut >= len(words):
        return text
    tail = " ".join(words[cut:])
    return tail if _any(words[cut:], lex.same_time) or parse_time(tail) or _has_day(tail) else text


def _has_day(text: str) -> bool:
    return parse_day(text, date(2000, 1, 3)) is not None


@dataclass(frozen=True)
class Shift:
    """A visit moved relative to its own time: `minutes` earlier (negative) or later; None
    when only the direction is said ("a bit later that day")."""

    direction: Literal[-1, 1]
    minutes: int | None = None


def parse_shift(text: str) -> Shift | None:
    lex = _lexicon()
    words = _words(normalize(text))
    earlier, later = _any(words, lex.earlier), _any(words, lex.later)
    if earlier == later:
        return None
    amount = next((m for p, m in lex.shift_amounts if _any(words, (p,))), None)
    return Shift(-1 if earlier else 1, amount)


_JOINS = re.compile(
    r"\s*(?:[,;+&/]|\b(?:і|й|та|и|а також|а потом|потім|потом|and|then|plus|also)\b)\s*"
)


def said_as_named(text: str, candidates: Sequence[int], services: Sequence[Named]) -> list[int]:
    """Of services equally likely by their words, the one whose name holds two words of the
    text side by side ("lash lifts" → "Lash lift", "гель лак" → "…гель-лак"); empty when
    none or several do."""
    said = [_stem(w)[:4] for w in _words(normalize(text))]
    pairs = set(pairwise(said))
    hits = []
    for named in services:
        if named.id not in candidates:
            continue
        for name in named.names:
            words = [_stem(w)[:4] for w in _name_words(name)]
            if pairs & set(pairwise(words)):
                hits.append(named.id)
                break
    return hits if len(hits) == 1 else []


def for_whom(text: str) -> Literal["men", "women"] | None:
    """Whether the visit is for a man or a woman, when the message says ("для сина", "for my
    wife", "and a beard"); None when it says neither or both."""
    words = set(_words(normalize(text)))
    said = [kind for kind, hints in _lexicon().for_whom.items() if words & hints]
    return cast(Literal["men", "women"], said[0]) if len(said) == 1 else None


def prefer_for_whom(
    found: list[tuple[int, float]], text: str, services: Sequence[Named], spread: float = 6.0
) -> list[tuple[int, float]]:
    """Matches re-ordered so that, among those as good as the best, the men's or women's
    service the message points to comes first and the other drops out."""
    whom = for_whom(text)
    if whom is None or len(found) < 2:
        return found
    best = found[0][1]
    close = [f for f in found if best - f[1] <= spread]
    if len(close) < 2:
        return found
    fitting = {sid for sid, _ in match_services(whom, services, limit=20)}
    chosen = [f for f in close if f[0] in fitting]
    if len(chosen) != 1:
        return found
    return chosen + [f for f in found if f not in close]


def _fits(
    part: str, service_id: int, found: list[tuple[int, float]], services: Sequence[Named]
) -> bool:
    """Whether a part of a message fits the service the whole message names best about as
    well as it fits its own best ("пофарбувати" beside "брови": the brows' tint, not hair
    colour)."""
    best = found[0][1]
    return any(sid == service_id and best - score <= 6.0 for sid, score in found)


def several_services(text: str, services: Sequence[Named]) -> list[int]:
    """Two or more services named apart in one message ("манікюр і педикюр", "a cut and a
    beard trim"), in the order said; empty when the message names one. A part that fits
    several services alike counts as its best fit: beside a second service it is a visit
    being planned, and the summary before booking says what was understood."""
    named: list[int] = []
    said = normalize(text)
    # A service whose own name holds "and" ("Brow shaping and tint") is one wish, not two.
    for service in services:
        for name in service.names:
            whole = normalize(name)
            if " " in whole and re.search(rf"\b{re.escape(whole)}\b", said):
                said = said.replace(whole, " ")
                named.append(service.id)
                break
    whole = match_services(text, services)
    for part in _JOINS.split(said):
        found = prefer_for_whom(match_services(part, services), text, services) if part else []
        if found and whole and _fits(part, whole[0][0], found, services):
            found = [whole[0]]  # "брови підправити і пофарбувати": one service's two words
        if not found:
            continue
        if found[0][0] not in named:
            named.append(found[0][0])
    return named if len(named) > 1 else []


def says_all(text: str) -> bool:
    """ "Both", "all of them", "обидва", "все записи"."""
    return _any(_words(normalize(text)), _lexicon().all_of_them)


def says_same_day(text: str) -> bool:
    """ "Next week, same day": the weekday of the visit being moved."""
    return _any(_words(normalize(text)), _lexicon().same_day)


def says_same_time(text: str) -> bool:
    """ "Same time", "в той же час": the time of the appointment being moved."""
    return _any(_words(normalize(text)), _lexicon().same_time)


def unoffered_service(text: str, services: Sequence[Named]) -> str | None:
    """The client's words for a service the salon's price list does not have ("масаж",
    "sugaring", "hair extensions"), or None. A word that is in one of the salon's own
    service names is never declined: a salon that does massage matches it as a service."""
    lex = _lexicon()
    words = _words(normalize(text))
    names = [{_stem(w) for w in _name_words(name)} for named in services for name in named.names]
    for pattern in lex.not_offered:
        for i in _find(words, pattern):
            said = words[i : i + len(pattern.words)]
            if not any({_stem(w) for w in said} <= name for name in names):
                return " ".join(said)
    return None


# Intents -------------------------------------------------------------------------------------


@cache
def _intent_index() -> tuple[_PatternIndex, dict[_Pattern, tuple[str, ...]]]:
    """Every intent's patterns in one index, and the intents each pattern says."""
    intents_of: dict[_Pattern, tuple[str, ...]] = {}
    for intent, patterns in _lexicon().intents.items():
        for pattern in patterns:
            intents_of[pattern] = (*intents_of.get(pattern, ()), intent)
    return _PatternIndex(tuple(intents_of)), intents_of


def detect_intents(text: str) -> set[Intent]:
    """What the message asks for; empty when nothing is recognised.

    "book" is dropped when the message is about an existing booking (cancel, reschedule, my
    appointments), and "my_appointments" when it cancels or moves one: "скасуйте мій запис"
    is a cancel. A "yes" word after a negation ("не підходить") is a "no".
    """
    lex = _lexicon()
    words = _words(normalize(text))
    found: set[str] = {
        intent for intent, marks in lex.emoji.items() if any(m in text for m in marks)
    }
    index, intents_of = _intent_index()
    for i, n in index.matches(words, True):
        negated = i > 0 and words[i - 1] in lex.negations
        for intent in intents_of[index.patterns[n]]:
            found.add("no" if intent == "yes" and negated else intent)
    if (
        not found & {"cancel", "reschedule"}
        and _any(words, lex.instead_of)
        and (parse_time(text) or _has_day(text))
    ):
        found.add("reschedule")  # "can I do 4pm instead of 10?": their visit, moved
    if parse_shift(text) is not None and (
        _any(words, lex.instead)
        or found & {"reschedule", "my_appointments"}
        or _any(words, lex.appointment_words)
    ):
        found.add("reschedule")  # "а можна мій запис на годину раніше?"
    if "cancel" in found and (
        "reschedule" in found
        or _any(words, lex.same_time)
        or _any(words, lex.instead)
        or _any(words, lex.instead_of)
    ):
        # "cancel Thursday… actually can you move it to Friday?", "can't make it today, can
        # we do tomorrow same time?": a move. A cancel read into it would lose the visit.
        found -= {"cancel"}
        found.add("reschedule")
    if found & {"cancel", "reschedule"}:
        found -= {"book", "my_appointments"}
    if "my_appointments" in found:
        found.discard("book")
    return cast(set[Intent], found)
