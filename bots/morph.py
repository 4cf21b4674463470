"""Ukrainian and Russian word forms through pymorphy3: people's names in a case, service names
in a case, and the dictionary forms of a client's word.

The analyzers load once, on first use (about 0.1 s each, see `warm_up`); every answer is
cached, so a repeated name or word costs a dictionary lookup. Nothing here raises on odd
text: a word the dictionary does not know is left as it is.
"""

from __future__ import annotations

import re
from functools import cache, lru_cache
from typing import Literal

import pymorphy3
from pymorphy3.analyzer import Parse

from prompts import load_json

__all__ = [
    "Case",
    "Lang",
    "analyzer",
    "inflect_person",
    "inflect_phrase",
    "lemmas",
    "warm_up",
    "word_is_known",
]

Lang = Literal["uk", "ru"]
Case = Literal["nomn", "gent", "datv", "accs", "ablt", "loct", "voct"]
Gender = Literal["masc", "femn"]

_WORD = re.compile(r"[^\W\d_]+(?:['’ʼ-][^\W\d_]+)*")
_APOSTROPHES = str.maketrans({"’": "'", "ʼ": "'", "`": "'"})
_NOT_DECLINED = frozenset({"Fixd"})
_CASES = frozenset({"nomn", "gent", "datv", "accs", "ablt", "loct", "voct"})


@cache
def analyzer(lang: Lang) -> pymorphy3.MorphAnalyzer:
    """The language's analyzer, loaded on first use and kept."""
    return pymorphy3.MorphAnalyzer(lang="ru" if lang == "ru" else "uk")


def warm_up() -> None:
    """Load both dictionaries now, e.g. at start-up, so no client's message waits for them."""
    analyzer("uk")
    analyzer("ru")


def _clean(word: str) -> str:
    return word.lower().translate(_APOSTROPHES).replace("ё", "е")


@lru_cache(maxsize=65536)
def word_is_known(word: str, lang: Lang) -> bool:
    """Whether the dictionary has this exact word form (case-insensitive, ё as е)."""
    cleaned = _clean(word)
    if not cleaned or not _WORD.fullmatch(cleaned):
        return False
    return analyzer(lang).word_is_known(cleaned)


@lru_cache(maxsize=65536)
def _parses(word: str, lang: Lang) -> tuple[Parse, ...]:
    return tuple(analyzer(lang).parse(word))


def _from_dictionary(parse: Parse) -> bool:
    # The predictor guesses forms of unknown words; a guess is not good enough to rewrite a name.
    return any(type(step[0]).__name__ == "DictionaryAnalyzer" for step in parse.methods_stack)


def _inflected(parse: Parse, case: str, extra: frozenset[str] = frozenset()) -> str | None:
    if case == "nomn" and "nomn" in parse.tag.grammemes:
        return parse.word
    try:
        form = parse.inflect({case} | extra)
    except (ValueError, KeyError, IndexError):
        return None
    return form.word if form is not None else None


def _same_shape(source: str, word: str) -> str:
    """`word` written with `source`'s capitals: Title, UPPER or lower, hyphen by hyphen."""
    if "-" in source and source.count("-") == word.count("-"):
        return "-".join(
            _same_shape(s, w) for s, w in zip(source.split("-"), word.split("-"), strict=True)
        )
    if source.isupper() and len(source) > 1:
        return word.upper()
    if source[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


# People ------------------------------------------------------------------------------------


def _name_parse(word: str, lang: Lang) -> Parse | None:
    for parse in _parses(_clean(word), lang):
        if (
            "Name" in parse.tag.grammemes
            and "nomn" in parse.tag.grammemes
            and "plur" not in parse.tag.grammemes
        ):
            if _from_dictionary(parse):
                return parse
    return None


@cache
def _gender_endings() -> dict[str, list[str]]:
    return load_json("language/names.json")["feminine_endings"]


def _guess_gender(first: str, lang: Lang) -> Gender:
    parse = _name_parse(first, lang)
    if parse is not None:
        return "femn" if "femn" in parse.tag.grammemes else "masc"
    # A name the dictionary lacks ("Аліна", "Сніжана"): most women's names end in -а/-я.
    lowered = _clean(first)
    return "femn" if lowered.endswith(tuple(_gender_endings().get(lang, ["а", "я"]))) else "masc"


def _surname_parse(word: str, gender: Gender, lang: Lang) -> Parse | None:
    """The surname's reading for this gender; None where it does not decline or is unknown."""
    parses = [
        p
        for p in _parses(_clean(word), lang)
        if "nomn" in p.tag.grammemes and "plur" not in p.tag.grammemes
    ]
    known = [p for p in parses if _from_dictionary(p)]

    def fits(parse: Parse) -> bool:
        grammemes = parse.tag.grammemes
        return gender in grammemes or {"ms-f", "Fixd"} <= grammemes

    for parse in known:
        if "Surn" in parse.tag.grammemes and fits(parse):
            return None if _NOT_DECLINED & parse.tag.grammemes else parse
    # Many surnames are common nouns (Мельник, Коваль, Гончар): a man's declines like the
    # noun; a woman's surname that is not a feminine form (-а, -ська) stays as it is.
    for parse in known:
        if parse.tag.POS == "NOUN" and fits(parse) and {"anim"} <= parse.tag.grammemes:
            return parse if gender == "masc" or parse.word.endswith(("а", "я")) else None
    for parse in parses:  # a guessed but plainly surname-shaped word: -енко, -ова, -ська...
        if "Surn" in parse.tag.grammemes and fits(parse) and parse.score >= 0.3:
            return None if _NOT_DECLINED & parse.tag.grammemes else parse
    return None


def _patronymic_parse(word: str, gender: Gender, lang: Lang) -> Parse | None:
    for parse in _parses(_clean(word), lang):
        grammemes = parse.tag.grammemes
        if {"Patr", "nomn", gender} <= grammemes:
            return parse
    return None


def inflect_person(full_name: str, case: Case, lang: Lang) -> str:
    """A person's name in a case: "Олена Коваль" → gent "Олени Коваль", "Андрій Шевченко" →
    "Андрія Шевченка". First name, then optional patronymic, then surname (or the surname
    first when the first word is not a known first name but the second is); gender comes
    from the first name. Words the dictionary does not know, and women's surnames that do not
    decline, stay as written; spacing and punctuation are kept.
    """
    try:
        return _inflect_person(full_name, case, "ru" if lang == "ru" else "uk")
    except Exception:  # a reply must go out: an unexpected analyzer error keeps the name
        return full_name


@lru_cache(maxsize=4096)
def _inflect_person(full_name: str, case: str, lang: Lang) -> str:
    if case not in _CASES:
        return full_name
    words = list(_WORD.finditer(full_name))
    if not words:
        return full_name
    texts = [m.group(0) for m in words]
    first_at = 0
    if len(texts) > 1 and _name_parse(texts[0], lang) is None and _name_parse(texts[1], lang):
        first_at = 1  # "Коваль Олена": surname first
    gender = _guess_gender(texts[first_at], lang)
    forms: list[str] = []
    for i, text in enumerate(texts):
        if i == first_at:
            parse = _name_parse(text, lang)
        elif i == first_at + 1 and first_at == 0 and len(texts) > 2:
            parse = _patronymic_parse(text, gender, lang) or _surname_parse(text, gender, lang)
        else:
            parse = _patronymic_parse(text, gender, lang) or _surname_parse(text, gender, lang)
        form = (
            _inflected(parse, case, frozenset({"sing"}) if lang == "ru" else frozenset())
            if parse
            else None
        )
        forms.append(_same_shape(text, form) if form else text)
    out, last = [], 0
    for match, form in zip(words, forms, strict=True):
        out.append(full_name[last : match.start()])
        out.append(form)
        last = match.end()
    out.append(full_name[last:])
    return "".join(out)


# Service names -----------------------------------------------------------------------------

_BREAKS = frozenset({"і", "й", "та", "и", "або", "или", "чи", "+", ",", "&", "/"})


def inflect_phrase(phrase: str, case: Case, lang: Lang, *, capitalize: bool | None = None) -> str:
    """A noun phrase in a case: "Манікюр класичний" → accs "манікюр класичний", "Ламінування
    брів" → ablt "ламінуванням брів". Each part between "і", "та", "+", "," gets its head
    noun (the first noun in the nominative) and the adjectives agreeing with it inflected;
    other words (a genitive "брів", "гель-лак", numbers, brackets) are kept.

    capitalize: True writes the first letter upper, False lower (unless the first word is an
    acronym such as "SPA"), None keeps it as given.
    """
    try:
        result = _inflect_phrase(phrase, case, "ru" if lang == "ru" else "uk")
    except Exception:  # a reply must go out: an unexpected analyzer error keeps the phrase
        result = phrase
    return _capitalized(result, capitalize)


def _capitalized(text: str, capitalize: bool | None) -> str:
    match = _WORD.search(text)
    if capitalize is None or match is None:
        return text
    word = match.group(0)
    if capitalize:
        new = word[:1].upper() + word[1:]
    elif sum(ch.isupper() for ch in word) > 1:
        return text  # "SPA-манікюр", "LPG": an acronym keeps its capitals
    else:
        new = word[:1].lower() + word[1:]
    return text[: match.start()] + new + text[match.end() :]


def _segments(phrase: str) -> list[list[re.Match[str]]]:
    """Words of the phrase grouped into the parts that each have their own head noun."""
    parts: list[list[re.Match[str]]] = [[]]
    last = 0
    for match in _WORD.finditer(phrase):
        gap = phrase[last : match.start()]
        if any(ch in gap for ch in "+,&/(") and parts[-1]:
            parts.append([])
        if match.group(0).lower() in _BREAKS:
            parts.append([])
        else:
            parts[-1].append(match)
        last = match.end()
    return [part for part in parts if part]


def _agrees(adjective: Parse, head: Parse) -> bool:
    if "plur" in head.tag.grammemes:
        return "plur" in adjective.tag.grammemes
    gender = head.tag.grammemes & {"masc", "femn", "neut"}
    return (
        bool(gender) and gender <= adjective.tag.grammemes and "plur" not in adjective.tag.grammemes
    )


@lru_cache(maxsize=4096)
def _inflect_phrase(phrase: str, case: str, lang: Lang) -> str:
    if case not in _CASES:
        return phrase
    replacements: dict[int, str] = {}
    for part in _segments(phrase):
        replacements.update(_inflect_part(part, case, lang))
    if not replacements:
        return phrase
    out, last = [], 0
    for match in _WORD.finditer(phrase):
        if match.start() in replacements:
            out.append(phrase[last : match.start()])
            out.append(_same_shape(match.group(0), replacements[match.start()]))
            last = match.end()
    out.append(phrase[last:])
    return "".join(out)


def _inflect_part(part: list[re.Match[str]], case: str, lang: Lang) -> dict[int, str]:
    head_at, head = _head(part, lang)
    if head is None:
        return {}
    done: dict[int, str] = {}
    form = _inflected(head, case)
    if form:
        done[part[head_at].start()] = form
    for i, match in enumerate(part):
        if i == head_at:
            continue
        adjective = _agreeing_adjective(match.group(0), head, lang)
        if adjective is None:
            continue
        adj_form = _inflected(adjective, _adjective_case(head, case), _number(head))
        if adj_form:
            done[match.start()] = adj_form
    return done


def _adjective_case(head: Parse, case: str) -> str:
    """The case an adjective takes: the accusative of a masculine or plural noun is its
    nominative for things ("класичний манікюр") and its genitive for the living."""
    grammemes = head.tag.grammemes
    if case == "accs" and ("masc" in grammemes or "plur" in grammemes):
        return "gent" if "anim" in grammemes else "nomn"
    return case


def _number(head: Parse) -> frozenset[str]:
    return frozenset({"plur"}) if "plur" in head.tag.grammemes else frozenset()


def _head(part: list[re.Match[str]], lang: Lang) -> tuple[int, Parse | None]:
    for i, match in enumerate(part):
        for parse in _parses(_clean(match.group(0)), lang):
            if (
                parse.tag.POS == "NOUN"
                and "nomn" in parse.tag.grammemes
                and _from_dictionary(parse)
            ):
                if (
                    "Name" in parse.tag.grammemes
                    or "Surn" in parse.tag.grammemes
                    or "Abbr" in parse.tag.grammemes
                ):
                    continue
                return i, parse
    return -1, None


def _agreeing_adjective(word: str, head: Parse, lang: Lang) -> Parse | None:
    for parse in _parses(_clean(word), lang):
        if (
            parse.tag.POS in ("ADJF", "PRTF")
            and "nomn" in parse.tag.grammemes
            and _agrees(parse, head)
        ):
            return parse if _from_dictionary(parse) else None
    return None


# Matching a client's words -----------------------------------------------------------------


@cache
def _diminutives() -> dict[str, dict[str, str]]:
    table = load_json("language/diminutives.json")
    return {lang: table.get(lang, {}) for lang in ("uk", "ru")}


@cache
def _diminutive_suffixes() -> tuple[str, ...]:
    suffixes = load_json("language/diminutives.json")["suffixes"]
    return tuple(sorted(suffixes, key=len, reverse=True))


def lemmas(word: str, lang: Lang) -> frozenset[str]:
    """The dictionary forms a client's word may stand for, lower case, ё as е.

    "олени", "оленою" → {"олена", ...}; "нігтиків" → {"нігтик", "ніготь"}; "манікюрчик" →
    {"манікюрчик", "манікюр"}. A word the language's dictionary lacks is tried in the other
    language (clients mix them: "олене"), then as a diminutive of a known noun; failing all,
    the word itself is its only lemma. Empty for text with no letters.
    """
    try:
        return _lemmas(_clean(word.strip()), "ru" if lang == "ru" else "uk")
    except Exception:  # matching must not break a reply
        return frozenset()


@lru_cache(maxsize=65536)
def _lemmas(word: str, lang: Lang) -> frozenset[str]:
    if not _WORD.fullmatch(word):
        return frozenset()
    other: Lang = "ru" if lang == "uk" else "uk"
    if word_is_known(word, lang):
        found = _dictionary_lemmas(word, lang)
    else:
        # Clients mix the languages ("олене" for "Олені"), misspell, and make diminutives
        # the dictionary lacks: gather what each of those readings offers.
        found = {word} | _dictionary_lemmas(word, other) | _name_lemmas(word)
        found |= {_clean(p.normal_form) for p in _parses(word, lang)[:2]}
    for lemma in list(found):
        base = _diminutives()[lang].get(lemma) or _diminutives()[other].get(lemma)
        if base:
            found.add(base)
        elif not word_is_known(lemma, lang) or lemma == word:
            found.update(_undiminished(lemma, lang))
    return frozenset(found)


def _dictionary_lemmas(word: str, lang: Lang) -> set[str]:
    if not word_is_known(word, lang):
        return set()
    return {_clean(p.normal_form) for p in _parses(word, lang) if _from_dictionary(p)}


def _name_lemmas(word: str) -> set[str]:
    """First names (in either language) that have `word` among their forms: "олене" → "олена"."""
    out = set()
    for cut in (1, 2, 3):
        if len(word) - cut < 2:
            break
        for ending in ("а", "я", "й", ""):
            candidate = word[:-cut] + ending
            for lang in ("uk", "ru"):
                if candidate not in out and word in _name_forms(candidate, lang):
                    out.add(candidate)
    return out


@lru_cache(maxsize=4096)
def _name_forms(lemma: str, lang: Lang) -> frozenset[str]:
    for parse in _parses(lemma, lang):
        if {"Name", "nomn"} <= parse.tag.grammemes and _from_dictionary(parse):
            return frozenset(_clean(form.word) for form in parse.lexeme)
    return frozenset()


def _undiminished(lemma: str, lang: Lang) -> set[str]:
    """The noun a diminutive is made from, when dropping its suffix leaves a known noun."""
    out = set()
    for suffix in _diminutive_suffixes():
        if lemma.endswith(suffix) and len(lemma) - len(suffix) >= 3:
            stem = lemma[: -len(suffix)]
            for candidate in (stem, stem + "а", stem + "я"):
                if word_is_known(candidate, lang) and any(
                    p.tag.POS == "NOUN" and "nomn" in p.tag.grammemes and _from_dictionary(p)
                    for p in _parses(candidate, lang)
                ):
                    out.add(candidate)
                    break
    return out
