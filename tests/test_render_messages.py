"""Every shape of rendered message parses back (email.policy.default) to the From, To,
Subject, headers, parts and text that the campaign and the recipient's vars describe."""

from __future__ import annotations

import datetime as dt
import email.utils
import html as htmllib
import re

import ferrymail
import pytest
from ferrymail import Campaign, Recipient, RenderedMessage, Unsubscribe
from support import (
    SENDER,
    UNSUB,
    UNSUBSCRIBE_SECRET,
    as_body,
    assert_wire_clean,
    clicks,
    content,
    header_names,
    leaf_parts,
    list_unsubscribe,
    mailbox,
    parse,
    pixel_tokens,
    render_one,
    rendered,
    tracking,
    untrack_html,
    untrack_text,
)

HTML = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Autumn</title></head><body>
<h1>Hallo {{ first_name }},</h1>
<p>Neu in {{ city }}:
<a href="https://shop.example.com/?utm_source=news&amp;utm_campaign=autumn">der Laden</a> und
<a href="https://shop.example.com/stores/{{ store }}">Ihre Filiale</a> 🚢.</p>
<p><a href="mailto:help@example.com">Schreiben Sie uns</a> · <a href="tel:+15555550100">Anrufen</a>
· <a href="#top">Nach oben</a> · <a href="{{ unsubscribe_url }}">Abmelden</a></p>
</body></html>
"""

TEXT = """Hallo {{ first_name }},

Neu in {{ city }}: https://shop.example.com/?utm_source=news&utm_campaign=autumn
Ihre Filiale: https://shop.example.com/stores/{{ store }}.

Abmelden: {{ unsubscribe_url }}
"""

VARS = {"first_name": "Zoë", "city": "Zürich", "store": "zh-1", "segment": "vip"}


def full_campaign(**overrides: object) -> Campaign:
    spec: dict[str, object] = {
        "id": "autumn-2026",
        "sender": SENDER,
        "from_": "{{ brand }} <news@example.com>",
        "subject": "{{ first_name }}, Grüße aus {{ city }} 🎉",
        "html": HTML,
        "text": TEXT,
        "reply_to": "Kundendienst Müller <hilfe@example.com>",
        "headers": {"Feedback-ID": "autumn-2026:{{ segment }}:ferry"},
        "tracking": tracking(),
        "unsubscribe": Unsubscribe(url=UNSUB, mailto="unsubscribe@example.com"),
    }
    spec.update(overrides)
    return Campaign(**spec)  # type: ignore[arg-type]


def plain_campaign(**overrides: object) -> Campaign:
    """No tracking, no unsubscribe: the body is exactly what the templates render."""
    spec: dict[str, object] = {
        "id": "plain",
        "sender": SENDER,
        "from_": "Ferry News <news@example.com>",
        "subject": "{{ subject }}",
    }
    spec.update(overrides)
    return Campaign(**spec)  # type: ignore[arg-type]


def expected_html(unsubscribe_url: str, **vars: str) -> str:
    out = HTML.replace("{{ unsubscribe_url }}", unsubscribe_url)
    for name, value in vars.items():
        out = out.replace("{{ " + name + " }}", value)
    return out


def expected_text(unsubscribe_url: str, **vars: str) -> str:
    out = TEXT.replace("{{ unsubscribe_url }}", unsubscribe_url)
    for name, value in vars.items():
        out = out.replace("{{ " + name + " }}", value)
    return out


def test_both_parts_with_tracking_round_trip() -> None:
    campaign = full_campaign()
    vars = {**VARS, "brand": "Ferry Outfitters"}
    message = rendered(campaign, Recipient("ann@example.com", vars, id=42))
    assert_wire_clean(message.data)
    assert message.envelope_from == SENDER
    assert message.rcpt_to == "ann@example.com"
    assert message.smtputf8 is False
    msg = parse(message)

    assert sorted(header_names(message.data)) == sorted(
        [
            "Date",
            "From",
            "To",
            "Subject",
            "Message-ID",
            "MIME-Version",
            "Reply-To",
            "List-Unsubscribe",
            "List-Unsubscribe-Post",
            "List-Id",
            "Feedback-ID",
            "Content-Type",
        ]
    )
    assert mailbox(msg, "From") == ("Ferry Outfitters", "news@example.com")
    assert mailbox(msg, "To") == ("", "ann@example.com")
    assert mailbox(msg, "Reply-To") == ("Kundendienst Müller", "hilfe@example.com")
    assert msg["Subject"] == "Zoë, Grüße aus Zürich 🎉"
    assert msg["Feedback-ID"] == "autumn-2026:vip:ferry"
    assert msg["MIME-Version"] == "1.0"
    assert msg["Message-ID"] == message.message_id

    assert msg.get_content_type() == "multipart/alternative"
    text, html = leaf_parts(msg)
    assert [text.get_content_type(), html.get_content_type()] == ["text/plain", "text/html"]
    assert text.get_content_charset() == html.get_content_charset() == "utf-8"

    # The prose around the links is intact, and every http(s) link was tracked.
    assert content(text).startswith("Hallo Zoë,\n\nNeu in Zürich: https://t.example.com/c/")
    assert "\nIhre Filiale: https://t.example.com/c/" in content(text)
    assert '<h1>Hallo Zoë,</h1>\n<p>Neu in Zürich:\n<a href="https://t.example.com/c/' in content(
        html
    )
    assert {c.url for c in clicks(content(text))} == {
        "https://shop.example.com/?utm_source=news&utm_campaign=autumn",
        "https://shop.example.com/stores/zh-1",
    }
    assert len(pixel_tokens(content(html))) == 1

    # Put back, the tracked URLs give exactly the text the templates render.
    unsubscribe_url = next(u for u in list_unsubscribe(msg) if u.startswith(UNSUB))
    filled = {"first_name": "Zoë", "city": "Zürich", "store": "zh-1"}
    assert untrack_text(content(text)) == as_body(
        expected_text(unsubscribe_url, **filled), multipart=True
    )
    assert untrack_html(content(html)) == as_body(
        expected_html(unsubscribe_url, **filled), multipart=True
    )


@pytest.mark.parametrize(
    "brand",
    [
        "Ferry Outfitters",
        "Lee, Ann",
        'Ann "the boss" Lee',
        "Dr. O'Neil (Sales)",
        "Zoë Ünicode",
        "🚢 Fähre",
        "Ферри Аутфиттерс — новости и предложения недели",
        "Ann  Lee",
        "Ann\tLee",
    ],
)
def test_display_names_round_trip(brand: str) -> None:
    message = rendered(full_campaign(), Recipient("ann@example.com", {**VARS, "brand": brand}))
    assert_wire_clean(message.data)
    assert mailbox(parse(message), "From") == (brand, "news@example.com")


def test_text_only_is_a_single_text_plain_part() -> None:
    campaign = plain_campaign(text="Hallo {{ name }},\nbis bald.\n")
    message = rendered(campaign, Recipient("ann@example.com", {"subject": "Hi", "name": "Zoë"}))
    assert_wire_clean(message.data)
    msg = parse(message)
    assert not msg.is_multipart()
    assert msg.get_content_type() == "text/plain"
    assert msg.get_content_charset() == "utf-8"
    assert content(msg) == "Hallo Zoë,\nbis bald.\n"
    assert sorted(header_names(message.data)) == sorted(
        [
            "Date",
            "From",
            "To",
            "Subject",
            "Message-ID",
            "MIME-Version",
            "Content-Type",
            "Content-Transfer-Encoding",
        ]
    )


def test_html_only_is_a_single_text_html_part() -> None:
    campaign = plain_campaign(html="<p>Hallo {{ name }} &amp; Co</p>")
    message = rendered(campaign, Recipient("ann@example.com", {"subject": "Hi", "name": "<Zoë>"}))
    assert_wire_clean(message.data)
    msg = parse(message)
    assert not msg.is_multipart()
    assert msg.get_content_type() == "text/html"
    assert content(msg) == "<p>Hallo &lt;Zoë&gt; &amp; Co</p>\n"


def test_text_and_html_are_alternatives_text_first() -> None:
    campaign = plain_campaign(html="<p>{{ name }}</p>", text="{{ name }}")
    message = rendered(campaign, Recipient("ann@example.com", {"subject": "Hi", "name": "A & B"}))
    msg = parse(message)
    assert msg.get_content_type() == "multipart/alternative"
    parts = leaf_parts(msg)
    assert [(p.get_content_type(), content(p)) for p in parts] == [
        ("text/plain", "A & B"),
        ("text/html", "<p>A &amp; B</p>"),
    ]
    assert msg.get_body(("plain",)) is parts[0]
    assert msg.get_body(("html", "plain")) is parts[1]


def test_empty_text_part_is_kept_empty() -> None:
    campaign = plain_campaign(html="<p>{{ name }}</p>", text="")
    message = rendered(campaign, Recipient("ann@example.com", {"subject": "Hi", "name": "Ann"}))
    assert_wire_clean(message.data)
    msg = parse(message)
    assert [(p.get_content_type(), content(p)) for p in leaf_parts(msg)] == [
        ("text/plain", ""),
        ("text/html", "<p>Ann</p>"),
    ]


LONG_LINES = {
    "ascii": "x" * 10_000,
    "ascii-words": ("0123456789 " * 1000)[:10_000],
    "latin": "é" * 10_000,
    "cjk": "日本語" * 3_334,
    "emoji": "🎉" * 10_000,
    "equals": "a=b " * 2_500,
}


@pytest.mark.parametrize("line", LONG_LINES.values(), ids=LONG_LINES.keys())
def test_ten_thousand_character_lines(line: str) -> None:
    text_only = plain_campaign(text="start\n{{ line }}\nend\n")
    html_only = plain_campaign(html="<p>{{ line }}</p>\n")
    vars = {"subject": "long", "line": line}
    text_message = rendered(text_only, Recipient("ann@example.com", vars))
    html_message = rendered(html_only, Recipient("ann@example.com", vars))
    assert_wire_clean(text_message.data)
    assert_wire_clean(html_message.data)
    assert content(parse(text_message)) == f"start\n{line}\nend\n"
    assert content(parse(html_message)) == f"<p>{line}</p>\n"


PART_TEXTS = {
    "7bit": "Hello,\nsee you.",
    "quoted-printable": "Grüße,\nbis bald.",
    "base64": "日本語のテキスト\nです。",
    "long-line": "x" * 10_000,
}


@pytest.mark.parametrize("final", ["", "\n"], ids=["no-final-newline", "final-newline"])
@pytest.mark.parametrize("body", PART_TEXTS.values(), ids=PART_TEXTS.keys())
def test_multipart_parts_come_back_exactly(body: str, final: str) -> None:
    # In a multipart the CRLF before a boundary belongs to the boundary: a part's text
    # comes back exactly, whether or not it ends in a line break, in every encoding.
    campaign = plain_campaign(text="{{ body }}" + final, html="<p>{{ body }}</p>" + final)
    message = rendered(campaign, Recipient("ann@example.com", {"subject": "s", "body": body}))
    assert_wire_clean(message.data)
    text, html = leaf_parts(parse(message))
    assert content(text) == body + final
    assert content(html) == f"<p>{body}</p>" + final


@pytest.mark.parametrize(
    "subject",
    [
        "Grüße aus Zürich",
        "🎉🎉🎉 Sale 🎉🎉🎉",
        "Ваш заказ № 123 отправлен — спасибо, что выбрали нас! Следите за доставкой",
        "日本語の件名" * 20,
        "plain ascii " * 20,
        "x" * 300,
        "tab\tinside",
    ],
)
def test_subjects_round_trip(subject: str) -> None:
    campaign = plain_campaign(text="body")
    message = rendered(campaign, Recipient("ann@example.com", {"subject": subject}))
    assert_wire_clean(message.data)
    assert parse(message)["Subject"] == subject


@pytest.mark.parametrize(
    "subject",
    ["=?utf-8?B?SGFja2Vk?=", "Save =?utf-8?q?50=25?= today"],
)
def test_subject_that_looks_like_an_encoded_word_is_not_decoded(subject: str) -> None:
    # ASCII text that happens to have encoded-word syntax must itself be encoded, or a
    # reader decodes it into something the template never said (RFC 2047 §5).
    campaign = plain_campaign(text="body")
    message = rendered(campaign, Recipient("ann@example.com", {"subject": subject}))
    assert parse(message)["Subject"] == subject


def test_long_ascii_display_name_keeps_lines_within_998_octets() -> None:
    name = "Ferry Outfitters Newsletter" + "x" * 1200
    campaign = plain_campaign(from_="{{ name }} <news@example.com>", text="body")
    message = rendered(campaign, Recipient("ann@example.com", {"subject": "s", "name": name}))
    assert_wire_clean(message.data)
    assert mailbox(parse(message), "From") == (name, "news@example.com")


def test_subject_of_tab_separated_words_keeps_lines_within_998_octets() -> None:
    subject = "\t".join(["word"] * 300)
    campaign = plain_campaign(text="body")
    message = rendered(campaign, Recipient("ann@example.com", {"subject": subject}))
    assert_wire_clean(message.data)
    assert parse(message)["Subject"] == subject


def test_html_is_escaped_only_in_the_html_part() -> None:
    value = '<b>Tom & Jerry\'s "deal"</b>'
    campaign = plain_campaign(
        subject="{{ subject }}: {{ v }}",
        html="<p>{{ v }}</p>",
        text="{{ v }}",
        headers={"X-Deal": "{{ v }}"},
    )
    message = rendered(campaign, Recipient("ann@example.com", {"subject": "Deal", "v": value}))
    msg = parse(message)
    assert msg["Subject"] == f"Deal: {value}"
    assert msg["X-Deal"] == value
    text, html = leaf_parts(msg)
    assert content(text) == value
    shown = content(html)
    assert shown.startswith("<p>&lt;b&gt;Tom &amp; Jerry") and shown.endswith("b&gt;</p>")
    assert "<b>" not in shown and '"' not in shown
    assert htmllib.unescape(shown) == f"<p>{value}</p>"


def test_reply_to_and_extra_headers() -> None:
    campaign = plain_campaign(
        text="body",
        reply_to="{{ agent }} <support+{{ ticket }}@example.com>",
        headers={"Feedback-ID": "{{ ticket }}:news:ferry", "X-Campaign": "autumn/{{ segment }}"},
    )
    message = rendered(
        campaign,
        Recipient(
            "ann@example.com", {"subject": "s", "agent": "Jürgen", "ticket": 77, "segment": "ü"}
        ),
    )
    assert_wire_clean(message.data)
    msg = parse(message)
    assert mailbox(msg, "Reply-To") == ("Jürgen", "support+77@example.com")
    assert msg["Feedback-ID"] == "77:news:ferry"
    assert msg["X-Campaign"] == "autumn/ü"
    names = header_names(message.data)
    assert names.count("Feedback-ID") == names.count("X-Campaign") == names.count("Reply-To") == 1


def test_no_reply_to_unless_given() -> None:
    message = rendered(plain_campaign(text="body"), Recipient("ann@example.com", {"subject": "s"}))
    assert "Reply-To" not in header_names(message.data)
    assert "List-Unsubscribe" not in header_names(message.data)


def test_idn_recipient_domain_goes_to_the_envelope_as_a_labels() -> None:
    campaign = plain_campaign(text="Hallo")
    message = rendered(campaign, Recipient("ann@bücher.example", {"subject": "s"}))
    assert message.rcpt_to == "ann@xn--bcher-kva.example"
    assert message.smtputf8 is False
    msg = parse(message)
    assert mailbox(msg, "To") == ("", "ann@xn--bcher-kva.example")


def test_idn_sender_domain_goes_to_the_envelope_as_a_labels() -> None:
    campaign = plain_campaign(sender="bounces@straße.example", text="Hallo")
    message = rendered(campaign, Recipient("ann@example.com", {"subject": "s"}))
    assert message.envelope_from.endswith("@xn--strae-oqa.example")
    assert message.envelope_from.isascii()


def test_non_ascii_local_part_needs_smtputf8() -> None:
    campaign = plain_campaign(text="Hallo")
    message = rendered(campaign, Recipient("jürgen@bücher.example", {"subject": "s"}))
    assert message.smtputf8 is True
    assert message.rcpt_to == "jürgen@xn--bcher-kva.example"
    assert_wire_clean(message.data)
    assert mailbox(parse(message), "To") == ("", "jürgen@xn--bcher-kva.example")

    ascii_message = rendered(campaign, Recipient("juergen@bücher.example", {"subject": "s"}))
    assert ascii_message.smtputf8 is False


def _message_ids(campaign: Campaign, recipients: list[Recipient]) -> list[str]:
    results = ferrymail.render(campaign, recipients)
    ids = []
    for r in results:
        assert isinstance(r, RenderedMessage), r
        assert parse(r)["Message-ID"] == r.message_id
        ids.append(r.message_id)
    return ids


def test_message_id_is_stable_per_recipient_and_distinct_between_recipients() -> None:
    campaign = full_campaign()
    recipients = [
        Recipient("ann@example.com", {**VARS, "brand": "B"}, id=7),
        Recipient("bob@example.com", {**VARS, "brand": "B"}, id="7"),
        Recipient("cy@example.com", {**VARS, "brand": "B"}),
        Recipient("dee@example.com", {**VARS, "brand": "B"}),
        Recipient("eve@example.com", {**VARS, "brand": "B"}, id=8),
    ]
    first = _message_ids(campaign, recipients)
    again = _message_ids(full_campaign(), recipients)
    assert first == again
    assert len(set(first)) == len(first)
    for mid in first:
        assert re.fullmatch(r"<[^<>@\s]+@[^<>@\s]+\.[^<>@\s]+>", mid), mid
    # Another campaign to the same recipients gets other Message-IDs.
    other = _message_ids(full_campaign(id="winter-2026"), recipients)
    assert not set(other) & set(first)


def test_date_header_is_present_and_parseable() -> None:
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    message = rendered(plain_campaign(text="x"), Recipient("ann@example.com", {"subject": "s"}))
    after = dt.datetime.now(dt.UTC)
    msg = parse(message)
    assert header_names(message.data).count("Date") == 1
    date = email.utils.parsedate_to_datetime(msg["Date"])
    assert date.tzinfo is not None
    assert before <= date <= after


def test_unsubscribe_headers() -> None:
    campaign = full_campaign(
        unsubscribe=Unsubscribe(
            url=UNSUB, mailto="unsubscribe@example.com", secret=UNSUBSCRIBE_SECRET
        )
    )
    message = rendered(campaign, Recipient("ann@example.com", {**VARS, "brand": "B"}, id=42))
    msg = parse(message)
    url, mailto = list_unsubscribe(msg)
    assert url.startswith(UNSUB)
    assert mailto.startswith("mailto:unsubscribe@example.com?subject=")
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    # {{ unsubscribe_url }} in both bodies is the header's URL, and is not click-tracked.
    text, html = leaf_parts(msg)
    assert re.search(f"^Abmelden: {re.escape(url)}$", content(text), re.MULTILINE)
    assert f'<a href="{url}">Abmelden</a>' in content(html)


def test_one_bad_recipient_does_not_fail_the_others() -> None:
    campaign = plain_campaign(text="Hallo {{ name }}")
    results = ferrymail.render(
        campaign,
        [
            Recipient("ann@example.com", {"subject": "s", "name": "Ann"}),
            Recipient("not-an-address", {"subject": "s", "name": "X"}),
            Recipient("bob@example.com", {"subject": "s"}),
            Recipient("cy@example.com", {"subject": "s\r\nBcc: x@example.com", "name": "Cy"}),
            "dee@example.com",
            Recipient("eve@example.com", {"subject": "s", "name": "Eve"}),
        ],
    )
    kinds = [type(r).__name__ for r in results]
    assert kinds == [
        "RenderedMessage",
        "RenderError",
        "RenderError",
        "RenderError",
        "RenderError",
        "RenderedMessage",
    ]
    assert [r.recipient.address for r in results] == [
        "ann@example.com",
        "not-an-address",
        "bob@example.com",
        "cy@example.com",
        "dee@example.com",
        "eve@example.com",
    ]
    ok = results[-1]
    assert isinstance(ok, RenderedMessage)
    assert content(parse(ok)) == "Hallo Eve\n"


def test_render_result_of_a_plain_address_string() -> None:
    result = render_one(plain_campaign(subject="Hi", text="x"), "ann@example.com")
    assert isinstance(result, RenderedMessage)
    assert result.recipient == Recipient("ann@example.com")


def _with_headers(headers: dict[str, str]) -> Campaign:
    return Campaign(
        id="h",
        sender=SENDER,
        from_="news@example.com",
        subject="Hi",
        text="x\n",
        headers=headers,
    )


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("Received", "receiving servers"),
        ("received-spf", "receiving servers"),
        ("Authentication-Results", "receiving servers"),
        ("ARC-Seal", "receiving servers"),
        ("ARC-Authentication-Results", "receiving servers"),
        ("Delivered-To", "receiving servers"),
        ("DKIM-Signature", "signatures"),
        ("Resent-From", "re-sent"),
        ("resent-message-id", "re-sent"),
        ("Content-Disposition", "writes this header itself"),
        ("List-Unsubscribe-Post", "writes this header itself"),
        ("Cc", "delivers to nobody else"),
    ],
)
def test_extra_headers_a_sender_must_not_write_are_refused(name: str, why: str) -> None:
    with pytest.raises(ferrymail.ConfigError) as raised:
        _with_headers({"X-Ok": "1", name: "x"})
    assert raised.value.field == f"headers[{name!r}]".replace("'", '"')
    assert why in str(raised.value)


def test_one_header_name_in_two_cases_is_refused_naming_both() -> None:
    with pytest.raises(ferrymail.ConfigError) as raised:
        _with_headers({"Feedback-ID": "a:b:c", "X-Other": "1", "feedback-id": "d:e:f"})
    message = str(raised.value)
    assert '"Feedback-ID"' in message and '"feedback-id"' in message, message


def test_headers_a_sender_may_write_are_written() -> None:
    extra = {"Sender": "robot@example.com", "List-Id": "<news.example.com>", "X-Campaign": "a"}
    msg = parse(rendered(_with_headers(extra), "ann@example.net"))
    for name, value in extra.items():
        assert msg[name] == value
