"""What the offline brain reads in a message beyond one intent: names, several services,
moves relative to a visit, spoken times, services the salon does not do, who a visit is
for; and dates the rules leave to dateparser. Pure functions, checked on client phrasing."""

from __future__ import annotations

import json
from datetime import date, time
from pathlib import Path

import pytest

from bots import dates, nlu
from bots.offline import person_name

TODAY = date(2027, 3, 1)  # a Monday
DEMO = json.loads((Path(__file__).parent.parent / "crm_store" / "demo_salon.json").read_text())
SERVICES = [nlu.Named(i + 1, (s["uk"], s["en"], s["ru"])) for i, s in enumerate(DEMO["services"])]
KEYS = {i + 1: s["key"] for i, s in enumerate(DEMO["services"])}


@pytest.mark.parametrize(
    ("text", "expected", "name"),
    [
        ("Мене звати Ірина", False, "Ірина"),
        ("Це Оксана, мій номер 0671234567", False, "Оксана"),
        ("I'm Kate", False, "Kate"),
        ("my name is anna smith and my number is 0501234567", False, "Anna Smith"),
        ("это Оля", False, "Оля"),
        ("Оксана Петренко, 067 123 45 67", True, "Оксана Петренко"),
        ("так, Марина +380501234567", True, "Марина"),
        ("це дорого", False, None),  # a lower-case word after "це" is not a name
        ("I am looking for a manicure", False, None),
        ("я хочу на манікюр", False, None),
        ("так", True, None),
        ("запишіть на четвер", True, None),
    ],
)
def test_parse_name(text: str, expected: bool, name: str | None) -> None:
    assert nlu.parse_name(text, expected=expected) == name


@pytest.mark.parametrize(
    ("text", "keys"),
    [
        ("Хочу на манікюр з покриттям і педикюр в п'ятницю", ["gel_manicure", "pedicure"]),
        ("хочу маникюр без покрытия и коррекцию бровей", ["manicure", "brows"]),
        ("haircut and beard on Saturday, how much?", ["mens_cut", "beard"]),  # a beard: men's
        ("чоловіча стрижка + борода", ["mens_cut", "beard"]),
        # One service whose own name holds "and" is one wish.
        ("brow shaping and tint wednesday 12 please", []),
        ("стрижка", []),
    ],
)
def test_several_services(text: str, keys: list[str]) -> None:
    assert [KEYS[i] for i in nlu.several_services(text, SERVICES)] == keys


@pytest.mark.parametrize(
    ("text", "whom", "first"),
    [
        ("стрижка для сина в суботу", "men", "mens_cut"),
        ("haircut for my daughter", "women", "womens_cut"),
        ("стрижка мужу в пятницу", "men", "mens_cut"),
    ],
)
def test_who_the_visit_is_for_decides_between_mens_and_womens(
    text: str, whom: str, first: str
) -> None:
    assert nlu.for_whom(text) == whom
    found = nlu.prefer_for_whom(nlu.match_services(text, SERVICES), text, SERVICES)
    assert KEYS[found[0][0]] == first


@pytest.mark.parametrize(
    ("text", "direction", "minutes"),
    [
        ("а можна мій запис на годину раніше?", -1, 60),
        ("could you push my pedicure tomorrow back an hour?", 1, 60),
        ("на полчаса позже можно?", 1, 30),
        ("можно пораньше?", -1, None),
    ],
)
def test_parse_shift(text: str, direction: int, minutes: int | None) -> None:
    assert nlu.parse_shift(text) == nlu.Shift(direction, minutes)  # type: ignore[arg-type]
    assert "reschedule" in nlu.detect_intents(text)


@pytest.mark.parametrize(
    ("text", "at"),
    [
        ("17 30", time(17, 30)),
        ("в полчетвертого", time(15, 30)),
        ("полдесятого", time(9, 30)),
        ("beard trim sunday 11?", time(11)),
        ("в суботу 13", time(13)),
        ("балаяж можно не в час а пораньше, в 10 утра?", time(10)),  # not the one said with "не"
        ("not at 5 but at 6", time(18)),
        ("в обід", time(13)),
    ],
)
def test_spoken_times(text: str, at: time) -> None:
    found = nlu.parse_time(text)
    assert found is not None and found.at == at


@pytest.mark.parametrize(
    ("text", "after", "before"),
    [
        ("в першій половині дня", None, time(12)),  # the morning, not one o'clock
        ("після обіду", time(13), None),
        ("after work on thursday", time(17), None),
    ],
)
def test_spoken_windows(text: str, after: time | None, before: time | None) -> None:
    assert nlu.parse_time(text) == nlu.TimeSpec(after=after, before=before)


def test_a_phone_number_is_never_a_time() -> None:
    assert nlu.parse_time("тел 067 123 45 67") is None


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("cancel thursday... actually no, can you just move it to friday same time?", "reschedule"),
        ("can't make it today, can we do tomorrow same time?", "reschedule"),
        ("не зможу прийти завтра, можна на четвер?", "reschedule"),
        ("can i do 4pm instead of 10 for my brows?", "reschedule"),
        ("скасуйте запис", "cancel"),
        ("cancel my appointment on friday", "cancel"),
    ],
)
def test_a_cancel_that_asks_for_another_time_is_a_move(text: str, intent: str) -> None:
    intents = nlu.detect_intents(text)
    assert intent in intents and not ({"cancel", "reschedule"} - {intent}) & intents


@pytest.mark.parametrize(
    ("text", "day"),
    [
        ("хочу перенести ламінування брів з сьогодні на середу", date(2027, 3, 3)),
        ("з середи на п'ятницю на ту ж годину", date(2027, 3, 5)),
        ("не встигаю на середу, перенесіть на наступну середу", date(2027, 3, 10)),
    ],
)
def test_the_last_day_named_is_where_a_visit_moves(text: str, day: date) -> None:
    assert nlu.last_day(text, TODAY) == nlu.DaySpan(day, day)


def test_move_target_and_same_time() -> None:
    said = "can't make it tomorrow, could we do wednesday same time?"
    assert nlu.move_target(said) == "wednesday same time"
    assert nlu.says_same_time(said) and nlu.says_same_time("на ту ж годину")


@pytest.mark.parametrize(
    ("text", "left"),
    [
        (
            "can you cancel my saturday appointment? the brow one next week stays",
            "can you cancel my saturday appointment",
        ),
        (
            "педикюр в пятницу отмените пожалуйста, маникюр оставьте",
            "педикюр в пятницу отмените пожалуйста",
        ),
        ("cancel friday", "cancel friday"),
    ],
)
def test_without_kept(text: str, left: str) -> None:
    assert nlu.without_kept(text) == left


@pytest.mark.parametrize(
    ("text", "declined"),
    [
        ("хочу на масаж", "масаж"),
        ("hair extensions please", "hair extensions"),
        ("шугаринг ног", "шугаринг"),
        ("наращивание волос", "наращивание волос"),
        ("nail extensions", None),  # on the price list
        ("нарощування вій", None),
    ],
)
def test_unoffered_service(text: str, declined: str | None) -> None:
    assert nlu.unoffered_service(text, SERVICES) == declined


@pytest.mark.parametrize(
    ("text", "place"),
    [
        ("great, the earliest one", 1),
        ("давайте найближчий вільний", 1),
        ("самое раннее", 1),
        ("yes the latest please", -1),
        ("о третій", None),  # an hour, not an option
    ],
)
def test_an_offered_time_picked_in_words(text: str, place: int | None) -> None:
    assert nlu.parse_ordinal(text) == place


@pytest.mark.parametrize(
    ("text", "intents"),
    [("👍", {"yes"}), ("ну ок", {"yes"}), ("норм", {"yes"}), ("go ahead", {"yes"}), ("👎", {"no"})],
)
def test_agreement_in_many_forms(text: str, intents: set[str]) -> None:
    assert nlu.detect_intents(text) == intents


@pytest.mark.parametrize(
    ("text", "first", "last"),
    [
        ("березня 15", date(2027, 3, 15), date(2027, 3, 15)),
        ("на початку квітня", date(2027, 4, 1), date(2027, 4, 28)),
        ("in march", date(2027, 3, 1), date(2027, 3, 28)),  # this March, from today
    ],
)
def test_dateparser_reads_what_the_rules_leave(text: str, first: date, last: date) -> None:
    assert nlu.parse_day(text, TODAY) == nlu.DaySpan(first, last)


@pytest.mark.parametrize("text", ["хочу на 5", "Maria please", "", "🙂"])
def test_dateparser_takes_no_bare_numbers_or_names(text: str) -> None:
    assert dates.read_day(text, TODAY) is None


@pytest.mark.parametrize(
    ("name", "lang", "case", "said"),
    [
        ("Олена Коваль", "uk", "gent", "Олени Коваль"),
        ("Андрій Шевченко", "uk", "gent", "Андрія Шевченка"),
        ("Ірина Мельник", "ru", "gent", "Ирины Мельник"),  # Russian spelling of the name
        ("Андрій Шевченко", "ru", "nomn", "Андрей Шевченко"),
        ("Олена Коваль", "en", "gent", "Олена Коваль"),
    ],
)
def test_masters_are_named_as_the_sentence_needs(
    name: str, lang: str, case: str, said: str
) -> None:
    assert person_name(name, case, lang) == said  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "all_of_them"),
    [("скасуйте обидва мої записи", True), ("cancel both please", True), ("отмените", False)],
)
def test_says_all(text: str, all_of_them: bool) -> None:
    assert nlu.says_all(text) is all_of_them


@pytest.mark.parametrize(
    "text", ["час той самий", "same time", "время то же", "на ту ж годину", "в тот же час"]
)
def test_same_time_in_either_word_order(text: str) -> None:
    assert nlu.says_same_time(text)
