"""Reading mail: the corpus in tests/fixtures/mail/ (real-world shapes: Gmail, Outlook, Apple
Mail, Ukrainian and Russian clients, old charsets, robots and bounces), each with the text the
bot and the inbox must see."""

from __future__ import annotations

from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from channels.email_parse import (
    automated_reason,
    find_leaf,
    html_to_text,
    leaf_bytes,
    parse_mail,
    reply_subject,
    strip_reply,
    synthetic_id,
)
from channels.email_repair import MAX_HEADER_FIELD, mail_date

MAIL = Path(__file__).parent / "fixtures" / "mail"
OUR_ID = "<0123456789abcdef0123456789abcdef.hub@salon.example>"

# file -> (sender, display name, subject, cleaned text)
CORPUS: dict[str, tuple[str | None, str | None, str, str]] = {
    "01_plain_en.eml": (
        "anna.smith@example.com",
        "Anna Smith",
        "Manicure on Saturday?",
        "Hi!\n\nDo you have a free slot for a manicure on Saturday morning?\n"
        "How much is gel polish?\n\nThanks,\nAnna",
    ),
    "02_alternative_uk.eml": (
        "olena.k@gmail.example",
        "Олена Ковальчук",
        "Запис на стрижку",
        "Добрий день!\n\nХочу записатися на стрижку до Марини в четвер після 18:00.\n"
        "Скільки коштує?",
    ),
    "03_html_only.eml": (
        "iryna@ukr.example",
        "Iryna",
        "Питання",
        "Доброго дня!\n\nЧи робите ви педикюр у неділю?\nІ скільки це коштує & триває?\n\n"
        "Дякую,\nІрина",
    ),
    "04_koi8u.eml": (
        "taras@i.example",
        "Тарас",
        "Манікюр",
        "Привіт!\nЧи є вільне вікно на манікюр у п'ятницю?\nЇжачок Ґудзик",
    ),
    "05_cp1251_base64.eml": (
        "natalia@mail.example",
        "Наталья",
        "Окрашивание",
        "Здравствуйте!\nМожно записаться на окрашивание в субботу?\nС уважением, Наталья",
    ),
    "06_attachments.eml": (
        "oksana@example.net",
        "Oksana",
        "Design like this",
        "Can you do this design? Photo attached.",
    ),
    "07_gmail_reply_en.eml": (
        "anna.smith@example.com",
        "Anna Smith",
        "Re: Manicure on Saturday?",
        "Yes, 11:00 works for me. See you then!",
    ),
    "08_gmail_reply_uk.eml": (
        "olena.k@gmail.example",
        "Олена",
        "Re: Запис на стрижку",
        "Так, підходить. Дякую!",
    ),
    "09_gmail_reply_ru.eml": (
        "natalia@gmail.example",
        "Natalia",
        "Re: Окрашивание",
        "Да, давайте на 12:00.",
    ),
    "10_outlook_reply_en.eml": (
        "james.brown@corp.example",
        "Brown, James",
        "RE: Re: Beard trim",
        "Please move me to 17:00 instead of 16:00.",
    ),
    "11_outlook_reply_uk.eml": (
        "m.ivanenko@corp.example",
        "Микола Іваненко",
        "Відп: Запис",
        "Добрий день, скасуйте, будь ласка, мій запис на середу.",
    ),
    "12_outlook_reply_ru.eml": (
        "sergey@corp.example",
        "Сергей",
        "Отв: Запись",
        "Подтверждаю, буду вовремя.",
    ),
    "13_iphone_uk.eml": ("sofia@icloud.example", "Софія", "Re: Запис", "Буду о 15:00, дякую!"),
    "14_iphone_ru.eml": (
        "dmitry@yandex.example",
        "Dmitry",
        "Re: Запись",
        "А можно перенести на час позже?",
    ),
    "15_forwarded.eml": (
        "petro@example.org",
        "Petro",
        "Fwd: Gift certificate",
        "---------- Forwarded message ---------\nFrom: Shop <noreply@shop.example>\n"
        "Date: Sun, 29 Nov 2026 at 12:00\nSubject: Gift certificate\nTo: <petro@example.org>\n\n"
        "Your gift certificate code: BELLA-2026-XYZ",
    ),
    "16_bounce_dsn.eml": (
        "mailer-daemon@mx.salon.example",
        "Mail Delivery System",
        "Undelivered Mail Returned to Sender",
        "This is the mail system at host mx.salon.example.\n\n"
        "I'm sorry to have to inform you that your message could not\n"
        "be delivered to one or more recipients.\n\n"
        "<nobody@gone.example>: host mx.gone.example[203.0.113.5] said: 550 5.1.1\n"
        "    <nobody@gone.example>: Recipient address rejected: User unknown",
    ),
    "17_autoreply.eml": (
        "maria@office.example",
        "Maria Koval",
        "Automatic reply: Re: Your appointment",
        "I am out of the office until 7 December with limited access to email.",
    ),
    "18_list_mail.eml": (
        "news@supplies.example",
        "Beauty Supplies",
        "Знижки -30%",
        "Black Friday\n\nВсі лаки -30% до неділі.",
    ),
    "19_no_message_id.eml": (
        "old.client@example.com",
        None,
        "price",
        "How much is a haircut for a boy?",
    ),
    "20_qmail_bounce.eml": (
        "mailer-daemon@relay.example",
        None,
        "failure notice",
        "Hi. This is the qmail-send program at relay.example.\n"
        "I'm afraid I wasn't able to deliver your message to the following addresses.\n"
        "This is a permanent error; I've given up. Sorry it didn't work out.\n\n"
        "<full@mailbox.example>:\n552 5.2.2 Mailbox full\n\n"
        "--- Below this line is a copy of the message.\n\n"
        "From: Bella Salon <hello@salon.example>\nTo: full@mailbox.example\n"
        f"Message-ID: {OUR_ID}\nSubject: Re: Booking\n\nYour booking is confirmed.",
    ),
    "21_apple_mail_en.eml": ("kate@me.example", "Kate", "Re: Lashes", "Perfect, thank you"),
    # Mail as careless senders write it: odd dates, wrong charsets, broken MIME, no From.
    "22_date_minus_zero.eml": (
        "olena.k@gmail.example",
        None,
        "Запит із сайту: манікюр",
        "Ім'я: Олена\nПовідомлення: Чи можна записатися на манікюр у п'ятницю після 17:00?",
    ),
    "23_no_date.eml": (
        "taras@i.example",
        "Тарас",
        "Перенесення запису",
        "Добрий день! Чи можна перенести мій запис з п'ятниці на суботу?",
    ),
    "24_garbage_date.eml": (
        "natalia@mail.example",
        "Наталья",
        "Вопрос по записи",
        "Здравствуйте! Во сколько вы открываетесь в субботу?",
    ),
    "25_obsolete_zone.eml": (
        "anna.smith@example.com",
        "Anna Smith",
        "One more question",
        "Can I also book a pedicure for my daughter on Saturday?",
    ),
    "26_no_zone.eml": (
        "sofia@icloud.example",
        "Софія",
        "Запис на неділю",
        "Чи працюєте ви в неділю? Хочу записатися на брови.",
    ),
    "27_wrong_charset.eml": (
        "iryna@ukr.example",
        "Iryna",
        "Ціни на нарощування",
        "Скільки коштує нарощування вій?\nДякую, Ірина",
    ),
    "28_broken_boundary.eml": (
        "sergey@corp.example",
        "Сергей",
        "Подтверждение записи",
        "Добрый день!\nПодтверждаю запись на четверг, 18:00.",
    ),
    "29_no_from.eml": (
        "dmitry@yandex.example",
        None,
        "Запись на маникюр",
        "Можно записаться на маникюр завтра утром?",
    ),
    "30_no_sender.eml": (None, None, "Перевірка", "Перевірка перенесення пошти."),
    "31_unfolded_boundary.eml": (
        "petro@example.org",
        "Petro",
        "Скасування",
        "Добрий вечір! Скасуйте, будь ласка, мій запис на вівторок.",
    ),
}
ROBOTS = {
    "16_bounce_dsn.eml": "Auto-Submitted: auto-replied",
    "17_autoreply.eml": "Auto-Submitted: auto-replied",
    "18_list_mail.eml": "Precedence: bulk",
    "20_qmail_bounce.eml": "sender mailer-daemon",
}


def test_the_corpus_is_complete() -> None:
    assert sorted(p.name for p in MAIL.glob("*.eml")) == sorted(CORPUS)
    assert len(CORPUS) >= 15


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_corpus_message(name: str) -> None:
    raw = (MAIL / name).read_bytes()
    mail = parse_mail(raw)
    sender, display, subject, text = CORPUS[name]
    assert (mail.sender, mail.display_name, mail.subject) == (sender, display, subject)
    assert mail.text == text
    assert mail.automated == ROBOTS.get(name)
    assert text.split("\n")[0] in mail.full_text  # the whole body is kept beside
    assert parse_mail(raw).message_id == mail.message_id  # stable: the dedupe key
    assert len(mail.message_id) <= 200 and mail.message_id.startswith("<")


def test_replies_keep_the_full_text_and_thread_headers() -> None:
    mail = parse_mail((MAIL / "07_gmail_reply_en.eml").read_bytes())
    assert mail.in_reply_to == OUR_ID
    assert mail.references == ["<CAF3x9k2Lq@mail.example.com>", OUR_ID]
    assert "> Hello Anna! We have Saturday 11:00 with Olga." in mail.full_text
    assert mail.headers["In-Reply-To"] == OUR_ID
    outlook = parse_mail((MAIL / "10_outlook_reply_en.eml").read_bytes())
    assert "James Brown | Finance" in outlook.full_text
    assert "Your beard trim is booked" in outlook.full_text


def test_bounces_name_our_message_and_the_reason() -> None:
    dsn = parse_mail((MAIL / "16_bounce_dsn.eml").read_bytes())
    assert dsn.bounce is not None and dsn.bounce.original_message_id == OUR_ID
    assert dsn.bounce.diagnostic == (
        "550 5.1.1 <nobody@gone.example>: Recipient address rejected: User unknown"
    )
    qmail = parse_mail((MAIL / "20_qmail_bounce.eml").read_bytes())
    assert qmail.bounce is not None and qmail.bounce.original_message_id == OUR_ID
    assert qmail.bounce.diagnostic == "552 5.2.2 Mailbox full"
    # An auto-reply to our message is a robot, not a bounce.
    assert parse_mail((MAIL / "17_autoreply.eml").read_bytes()).bounce is None
    # A delay notice (4.x.x, Action: delayed) does not fail the message.
    delayed = (
        (MAIL / "16_bounce_dsn.eml")
        .read_bytes()
        .replace(b"Action: failed", b"Action: delayed")
        .replace(b"Status: 5.1.1", b"Status: 4.4.1")
    )
    assert parse_mail(delayed).bounce is None


def test_attachments_are_listed_and_found_again_by_index() -> None:
    raw = (MAIL / "06_attachments.eml").read_bytes()
    photo, price = parse_mail(raw).attachments
    assert (photo.name, photo.mime_type) == ("nails.jpg", "image/jpeg")
    assert (price.name, price.mime_type) == ("прайс.pdf", "application/pdf")
    part = find_leaf(raw, photo.index)
    assert part is not None and leaf_bytes(part).startswith(b"\xff\xd8\xff\xe0")
    assert len(leaf_bytes(part)) == photo.size
    assert leaf_bytes(find_leaf(raw, price.index)) == b"%PDF-1.4 price list\n%%EOF\n"  # type: ignore[arg-type]
    assert find_leaf(raw, 99) is None
    # The original inside a DSN is one attachment, not its own parts.
    (original,) = parse_mail((MAIL / "16_bounce_dsn.eml").read_bytes()).attachments
    assert original.mime_type == "message/rfc822" and original.name == "Re: Booking.eml"


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Manicure", "Re: Manicure"),
        ("Re: Manicure", "Re: Manicure"),
        ("RE: Re: Manicure", "Re: Manicure"),
        ("Відп: Запис", "Re: Запис"),
        ("Отв: Re: Запись", "Re: Запись"),
        ("Fwd: Price", "Re: Price"),
        ("Re[2]: Price", "Re: Price"),
        ("", "Re:"),
    ],
)
def test_reply_subjects_never_stack(subject: str, expected: str) -> None:
    assert reply_subject(subject) == expected


@pytest.mark.parametrize(
    ("text", "cleaned"),
    [
        ("Thanks!\n\nOn Tue, 1 Dec 2026, Salon <a@b.c> wrote:\n> old", "Thanks!"),
        ("Ок\n\nвт, 1 груд. 2026 р. о 09:00 Салон <a@b.c> пише:\n> old", "Ок"),
        ("Добре\n\n01.12.2026 09:00, Салон написав(ла):\nold", "Добре"),
        ("Хорошо\n\n01.12.2026 09:00, Салон пишет:\nold", "Хорошо"),
        ("Хорошо\n\nИван Петров писал(а):\nold", "Хорошо"),
        ("Yes\n-----Original Message-----\nFrom: a\nSent: b\n\nold", "Yes"),
        ("Так\n\nВід: Салон\nНадіслано: вівторок\nТема: x\n\nold", "Так"),
        ("Да\n\nОт: Салон\nОтправлено: вторник\nТема: x\n\nold", "Да"),
        ("Да\n\nОт: Салон\nДата: вторник\n\nold", "Да"),
        ("Inline answer\n> question 1\nanswer 1\n> question 2", "Inline answer\nanswer 1"),
        ("Hello\n-- \nRoman, +380671234567", "Hello"),
        ("Hello\n\nSent from my Samsung Galaxy smartphone.", "Hello"),
        ("Привіт\n\nНадіслано з Outlook для Android", "Привіт"),
        ("Привет\n\nОтправлено с мобильного устройства", "Привет"),
        ("> only a quote", "> only a quote"),  # nothing of their own: kept whole
        ("From: me\nthe list says: from: is fine", "From: me\nthe list says: from: is fine"),
        (  # a sentence, not a phone's signature line
            "Hi\nSent from my heart, with more words than any phone's name has",
            "Hi\nSent from my heart, with more words than any phone's name has",
        ),
    ],
)
def test_strip_reply(text: str, cleaned: str) -> None:
    assert strip_reply(text) == cleaned


def test_html_to_text() -> None:
    html = (
        "<style>.x{}</style><p>Hello&nbsp;there,</p><p>line<br>break</p>"
        "<blockquote>quoted <b>old</b></blockquote><pre>a  b\nc</pre><script>x()</script>"
    )
    assert html_to_text(html) == "Hello there,\n\nline\nbreak\n\n> quoted old\n\na  b\nc"
    assert strip_reply(html_to_text(html)) == "Hello there,\n\nline\nbreak\n\na  b\nc"
    assert html_to_text("<p>unclosed <b>tags") == "unclosed tags"


def _robot(**headers: str) -> str | None:
    mail = EmailMessage()
    mail["From"] = headers.pop("From", "a@b.example")
    for name, value in headers.items():
        mail[name.replace("_", "-")] = value
    mail.set_content("x")
    return automated_reason(mail, mail["From"].addresses[0].addr_spec.lower())


def test_robots_by_every_sign() -> None:
    assert _robot() is None
    assert _robot(Auto_Submitted="no") is None
    assert _robot(Auto_Submitted="auto-generated") == "Auto-Submitted: auto-generated"
    assert _robot(Precedence="junk") == "Precedence: junk"
    assert _robot(Precedence="auto_reply") == "Precedence: auto_reply"
    assert _robot(Precedence="first-class") is None
    assert _robot(List_Id="<x.example>") == "List-Id present"
    assert _robot(List_Unsubscribe="<mailto:u@x>") == "List-Unsubscribe present"
    assert _robot(X_Autorespond="yes") == "X-Autorespond present"
    assert _robot(From="Postmaster@x.example") == "sender postmaster"
    assert _robot(Return_Path="<>") == "empty Return-Path"
    assert _robot(Return_Path="<a@b.example>") is None


def test_odd_messages_never_fail() -> None:
    assert synthetic_id(b"x") == synthetic_id(b"x") != synthetic_id(b"y")
    weird = (
        b"From: =?bogus-charset?Q?x?= <who@x.example>\r\nSubject: =?utf-8?B?!!!?=\r\n"
        b"Message-ID: <" + b"x" * 300 + b"@x>\r\n"
        b"Content-Type: text/plain; charset=x-unknown-8bit\r\n\r\n\xd0\x9f\xff hi\r\n"
    )
    mail = parse_mail(weird)
    assert mail.sender == "who@x.example" and "hi" in mail.text
    assert len(mail.message_id) <= 200 and mail.message_id.endswith("@long-id.invalid>")
    headless = parse_mail(b"just some bytes without headers")
    assert headless.sender is None
    assert parse_mail(b"").message_id.endswith("@no-message-id.invalid>")


# Dates -------------------------------------------------------------------------------------

KYIV = ZoneInfo("Europe/Kyiv")
# file -> when it was written (None: no usable Date, the channel takes the time of receipt)
CORPUS_DATES: dict[str, datetime | None] = {
    "02_alternative_uk.eml": datetime(2026, 11, 30, 8, 1, 2, tzinfo=UTC),
    "22_date_minus_zero.eml": datetime(2026, 11, 30, 9, 15, tzinfo=UTC),  # -0000 is UTC
    "23_no_date.eml": None,
    "24_garbage_date.eml": None,
    "25_obsolete_zone.eml": datetime(2026, 11, 30, 12, 55, tzinfo=UTC),  # EST
    "26_no_zone.eml": datetime(2026, 11, 30, 12, 20, tzinfo=UTC),  # 14:20 in Kyiv
}


@pytest.mark.parametrize("name", sorted(CORPUS_DATES))
def test_a_date_is_aware_or_absent(name: str) -> None:
    sent_at = parse_mail((MAIL / name).read_bytes(), zone=KYIV).sent_at
    assert sent_at == CORPUS_DATES[name]
    assert sent_at is None or sent_at.utcoffset() is not None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (format_datetime(datetime(2026, 12, 1, 9, 0)), datetime(2026, 12, 1, 9, 0, tzinfo=UTC)),
        ("Tue, 1 Dec 2026 09:00:00 -0000 (UTC)", datetime(2026, 12, 1, 9, 0, tzinfo=UTC)),
        ("Tue, 1 Dec 2026 09:00:00 +0200", datetime(2026, 12, 1, 7, 0, tzinfo=UTC)),
        ("Tue, 1 Dec 2026 09:00:00 GMT", datetime(2026, 12, 1, 9, 0, tzinfo=UTC)),
        ("Tue, 1 Dec 2026 09:00:00 PST", datetime(2026, 12, 1, 17, 0, tzinfo=UTC)),
        ("Tue, 1 Dec 2026 09:00:00 A", datetime(2026, 12, 1, 9, 0, tzinfo=UTC)),  # military
        ("Tue, 1 Dec 2026 09:00:00", datetime(2026, 12, 1, 9, 0, tzinfo=KYIV)),
        ("Tue, 1 Dec 2026 09:00:00 EET", datetime(2026, 12, 1, 9, 0, tzinfo=KYIV)),
        ("1 Jul 2026 09:00", datetime(2026, 7, 1, 9, 0, tzinfo=KYIV)),  # summer time
        ("Tue, 31 Feb 2026 09:00:00 +0000", None),
        ("Tue, 1 Dec 2026 25:00:00 +0000", None),
        ("Tue, 1 Dec 2026 09:00:00 +9999", None),
        ("Tue, 1 Dec 99999 09:00:00 +0000", None),
        ("вт, 1 груд. 2026 09:00", None),
        ("", None),
    ],
)
def test_mail_dates(value: str, expected: datetime | None) -> None:
    found = mail_date(value, KYIV)
    assert found == expected
    assert found is None or found.utcoffset() is not None


# Mail that must not stop a mailbox ----------------------------------------------------------


@pytest.mark.timeout(20)  # the email package alone takes minutes over these headers
def test_huge_headers_are_cut_before_they_are_parsed() -> None:
    encoded = b" ".join(b"=?utf-8?q?slow?=" for _ in range(30_000))  # ~500 KB, one field
    recipients = b", ".join(b'"Name, Surname" <a%d@x.example>' % n for n in range(20_000))
    raw = (
        b"From: Anna <anna@x.example>\r\nSubject: " + encoded + b"\r\nTo: " + recipients
        + b"\r\n" + (b"X-Filler: " + b"x" * 70 + b"\r\n") * 5_000
        + b"Message-ID: <late@x.example>\r\n\r\nhello\r\n"
    )  # fmt: skip
    mail = parse_mail(raw)
    assert (mail.sender, mail.text) == ("anna@x.example", "hello")
    assert 100 < len(mail.subject) <= MAX_HEADER_FIELD and mail.subject.startswith("slow")
    assert len(mail.headers["To"]) <= 1000
    # The header block is cut at Postfix's limit: what comes after it is not read.
    assert mail.message_id.endswith("@no-message-id.invalid>")


@pytest.mark.timeout(20)  # 3.11.7's HTMLParser takes minutes to hours (CVE-2025-6069)
@pytest.mark.parametrize(
    "html",
    ["<a " * 60_000, "<!--" * 60_000, "<" + "a" * 200_000, "</" * 60_000, "<p title='>" * 30_000],
    ids=["unclosed tags", "unclosed comments", "a long tag name", "end tags", "open quotes"],
)
def test_hostile_html_is_read_in_linear_time(html: str) -> None:
    raw = b"From: a@x.example\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + html.encode()
    mail = parse_mail(raw)
    assert mail.sender == "a@x.example" and len(mail.full_text) <= 50_000


def test_text_is_text_any_database_stores() -> None:
    raw = (
        b"From: =?utf-8?q?Ann=00a?= <anna@x.example>\r\nSubject: =?utf-8?q?Hi=00there?=\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable"
        b"\r\n\r\nhe=00llo\r\n"
    )
    mail = parse_mail(raw)
    assert (mail.display_name, mail.subject, mail.text) == ("Anna", "Hithere", "hello")
    assert "\x00" not in mail.full_text + "".join(mail.headers.values())


def test_mail_the_email_package_cannot_parse_is_still_read() -> None:
    nested = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (n, n)
        for n in range(3_000)
    )
    deep = parse_mail(
        b"From: Deep <deep@x.example>\r\nSubject: nested\r\n" + nested
        + b"Content-Type: text/plain\r\n\r\nhello from the bottom\r\n"
    )  # fmt: skip
    assert (deep.sender, deep.subject) == ("deep@x.example", "nested")
    assert deep.text == "hello from the bottom" and deep.defect is not None
    parens = parse_mail(b"From: " + b"(" * 5_000 + b"\r\nSubject: x\r\n\r\nbody\r\n")
    assert (parens.sender, parens.subject, parens.text) == (None, "x", "body")
    hostile_type = parse_mail(
        b"From: Anna <anna@x.example>\r\nSubject: =?utf-8?b?0J7Qu9C10L3QsA==?=\r\n"
        b"Content-Type: " + b"(" * 5_000 + b"\r\n\r\nbody\r\n"
    )
    assert (hostile_type.sender, hostile_type.subject, hostile_type.text) == (
        "anna@x.example",
        "Олена",
        "body",
    )
    assert parse_mail(b"Content-Type: multipart/mixed\r\n\r\njust text\r\n").text == "just text"
