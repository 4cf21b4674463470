"""bots/morph.py: names and service names in a case, and the dictionary forms of a word."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from bots.morph import inflect_person, inflect_phrase, lemmas, word_is_known

set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "salon-hub-hypothesis")


@pytest.mark.parametrize(
    ("name", "case", "expected"),
    [
        ("Олена Коваль", "gent", "Олени Коваль"),
        ("Андрій Шевченко", "gent", "Андрія Шевченка"),
        ("Ірина Мельник", "gent", "Ірини Мельник"),
        ("Марія Бондаренко", "gent", "Марії Бондаренко"),
        ("Андрій Коваль", "ablt", "Андрієм Ковалем"),
        ("Олена Коваль", "datv", "Олені Коваль"),
        ("Олена Коваль", "accs", "Олену Коваль"),
        ("Олена Коваль", "ablt", "Оленою Коваль"),
        ("Олена Коваль", "loct", "Олені Коваль"),
        ("Олена", "voct", "Олено"),
        ("Олена", "gent", "Олени"),
        ("Тетяна Кузьмінська", "ablt", "Тетяною Кузьмінською"),
        ("Оксана Петрова", "gent", "Оксани Петрової"),
        ("Олена Ігорівна Коваль", "gent", "Олени Ігорівни Коваль"),
        ("Коваль Олена", "gent", "Коваль Олени"),
        ("Snizhana X", "gent", "Snizhana X"),
        ("", "gent", ""),
    ],
)
def test_ukrainian_people(name: str, case: str, expected: str) -> None:
    assert inflect_person(name, case, "uk") == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "case", "expected"),
    [
        ("Олена", "gent", "Олены"),
        ("Олена", "datv", "Олене"),
        ("Ирина", "ablt", "Ириной"),
        ("Ирина Мельник", "gent", "Ирины Мельник"),
        ("Олена Коваль", "datv", "Олене Коваль"),
        ("Андрей Шевченко", "gent", "Андрея Шевченко"),
        ("Андрей Коваль", "gent", "Андрея Коваля"),
        ("Мария Иванова", "ablt", "Марией Ивановой"),
        ("Сергей Петров", "datv", "Сергею Петрову"),
    ],
)
def test_russian_people(name: str, case: str, expected: str) -> None:
    assert inflect_person(name, case, "ru") == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("phrase", "case", "lang", "expected"),
    [
        ("Манікюр класичний", "accs", "uk", "манікюр класичний"),
        ("Манікюр класичний", "gent", "uk", "манікюру класичного"),
        ("Ламінування брів", "ablt", "uk", "ламінуванням брів"),
        ("Класичний манікюр", "ablt", "uk", "класичним манікюром"),
        ("Чоловіча стрижка", "accs", "uk", "чоловічу стрижку"),
        ("Гелеві нігті", "accs", "uk", "гелеві нігті"),
        ("Манікюр + покриття гель-лак", "ablt", "uk", "манікюром + покриттям гель-лак"),
        ("Корекція та фарбування брів", "gent", "uk", "корекції та фарбування брів"),
        ("Жіноча стрижка (довге волосся)", "ablt", "uk", "жіночою стрижкою (довгим волоссям)"),
        ("SPA-педикюр", "gent", "uk", "SPA-педикюр"),
        ("Маникюр классический", "gent", "ru", "маникюра классического"),
        ("Мужская стрижка", "accs", "ru", "мужскую стрижку"),
        ("Ламинирование бровей", "ablt", "ru", "ламинированием бровей"),
    ],
)
def test_service_phrases(phrase: str, case: str, lang: str, expected: str) -> None:
    got = inflect_phrase(phrase, case, lang, capitalize=False)  # type: ignore[arg-type]
    assert got == expected


def test_phrase_capitalisation_follows_the_flag() -> None:
    assert inflect_phrase("манікюр", "ablt", "uk", capitalize=True) == "Манікюром"
    assert inflect_phrase("Манікюр", "ablt", "uk") == "Манікюром"
    assert inflect_phrase("Манікюр", "ablt", "uk", capitalize=False) == "манікюром"


@pytest.mark.parametrize(
    ("word", "lang", "lemma"),
    [
        ("олени", "uk", "олена"),
        ("оленою", "uk", "олена"),
        ("Олену", "uk", "олена"),
        ("олене", "uk", "олена"),
        ("манікюрчик", "uk", "манікюр"),
        ("нігтиків", "uk", "ніготь"),
        ("стрижечку", "uk", "стрижка"),
        ("брови", "uk", "брова"),
        ("олене", "ru", "олень"),
        ("маникюрчик", "ru", "маникюр"),
        ("ресничек", "ru", "ресница"),
        ("стрижку", "ru", "стрижка"),
    ],
)
def test_lemmas(word: str, lang: str, lemma: str) -> None:
    assert lemma in lemmas(word, lang)  # type: ignore[arg-type]


def test_lemmas_of_no_word_are_empty() -> None:
    assert lemmas("", "uk") == frozenset()
    assert lemmas("15:00", "ru") == frozenset()


def test_word_is_known() -> None:
    assert word_is_known("скільки", "uk")
    assert not word_is_known("скилки", "uk")
    assert word_is_known("ёлка", "ru") and word_is_known("елка", "ru")


@settings(max_examples=200, deadline=None, database=None)
@given(st.text(max_size=40), st.sampled_from(["gent", "datv", "accs", "ablt", "loct", "voct"]))
def test_never_raises(text: str, case: str) -> None:
    for lang in ("uk", "ru"):
        assert isinstance(inflect_person(text, case, lang), str)  # type: ignore[arg-type]
        assert isinstance(inflect_phrase(text, case, lang), str)  # type: ignore[arg-type]
        assert isinstance(lemmas(text, lang), frozenset)  # type: ignore[arg-type]
