"""bots/translit.py: Ukrainian and Russian typed in Latin letters, and English left alone."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from bots.translit import cyrillic_reading

set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "salon-hub-hypothesis")

UKRAINIAN = [
    ("pryvit, mozhna na manikur zavtra?", "привіт, можна на манікюр завтра?"),
    ("skilky koshtuye pedykyur", "скільки коштує педикюр"),
    ("hochu do oleny na 15:00", "хочу до олени на 15:00"),
    ("dobryi den", "добрий день"),
    ("dobryj vechir", "добрий вечір"),
    ("Dyakuyu!", "Дякую!"),
    ("spasybi", "спасибі"),
    ("tak", "так"),
    ("ni", "ні"),
    ("zavtra o 10 mozhlyvo?", "завтра о 10 можливо?"),
    ("skasuvaty zapys", "скасувати запис"),
    ("ya hochu zapysatysya na pedikyur 😊", "я хочу записатися на педикюр 😊"),
    ("chy ye vilni vikna na subotu?", "чи є вільні вікна на суботу?"),
    ("bud laska", "будь ласка"),
    ("pryvit Olena tut?", "привіт Олена тут?"),
    ("PRYVIT", "ПРИВІТ"),
    ("a yaka tsina?", "а яка ціна?"),
    ("zapyshit mene na stryzhku", "запишіть мене на стрижку"),
    ("mozhna perenesty na ponedilok?", "можна перенести на понеділок?"),
    ("na sim vechora", "на сім вечора"),
]
RUSSIAN = [
    ("zapishite menya na strizhku v subbotu", "запишите меня на стрижку в субботу"),
    ("spasibo", "спасибо"),
    ("da", "да"),
    ("net", "нет"),
    ("privet, skolko stoit manikyur?", "привет, сколько стоит маникюр?"),
    ("a mozhno k Olene v pyatnitsu", "а можно к Олене в пятницу"),
    ("otmenite zapis pozhaluysta", "отмените запись пожалуйста"),
    ("zdravstvuyte", "здравствуйте"),
    ("hochu na pedikyur zavtra v 12:30", "хочу на педикюр завтра в 12:30"),
    ("mozhno perenesti na chetverg?", "можно перенести на четверг?"),
    ("skolko po vremeni?", "сколько по времени?"),
    ("ya opazdyvayu na 10 minut", "я опаздываю на 10 минут"),
]
ENGLISH = [
    "hi can i book a manicure tomorrow at 5",
    "ok",
    "OK!",
    "thanks",
    "Olena",
    "Kristina",
    "hello",
    "Can I come at 14:00?",
    "haircut tomorrow pls",
    "see you soon",
    "What time do you close today?",
    "good morning",
    "yes please",
    "no thanks",
    "how much is a pedicure?",
    "asdfgh qwerty",
]
NOT_LATIN = ["Добрий день", "", "   ", "15:00", "👍", "Привіт, mozhna?", "12 3"]


@pytest.mark.parametrize(("text", "cyrillic"), UKRAINIAN)
def test_ukrainian_in_latin_reads_back(text: str, cyrillic: str) -> None:
    assert cyrillic_reading(text) == (cyrillic, "uk")


@pytest.mark.parametrize(("text", "cyrillic"), RUSSIAN)
def test_russian_in_latin_reads_back(text: str, cyrillic: str) -> None:
    assert cyrillic_reading(text) == (cyrillic, "ru")


@pytest.mark.parametrize("text", ENGLISH)
def test_english_chat_is_left_alone(text: str) -> None:
    assert cyrillic_reading(text) is None


@pytest.mark.parametrize("text", NOT_LATIN)
def test_text_that_is_not_mostly_latin_is_none(text: str) -> None:
    assert cyrillic_reading(text) is None


@settings(max_examples=300, deadline=None, database=None)
@given(st.text(max_size=80))
def test_never_raises_and_keeps_non_letters(text: str) -> None:
    result = cyrillic_reading(text)
    if result is not None:
        cyrillic, lang = result
        assert lang in ("uk", "ru")
        assert [c for c in cyrillic if c.isdigit()] == [c for c in text if c.isdigit()]


@settings(max_examples=200, deadline=None, database=None)
@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz' ", max_size=60))
def test_latin_noise_never_raises(text: str) -> None:
    result = cyrillic_reading(text)
    assert result is None or result[1] in ("uk", "ru")
