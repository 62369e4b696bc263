"""What goes wrong, and how it is said: TemplateError and ConfigError when a campaign is
built, RenderError (data, not an exception) for one recipient that cannot be rendered."""

from __future__ import annotations

import asyncio
import datetime as dt

import ferrymail
import pytest
from ferrymail import (
    Campaign,
    ConfigError,
    Recipient,
    RenderedMessage,
    RenderError,
    TemplateError,
    Tracking,
    Unsubscribe,
    _core,
)
from support import (
    SECRET,
    SENDER,
    TRACK,
    UNSUB,
    clicks,
    content,
    parse,
    render_one,
    rendered,
)


def campaign(**overrides: object) -> Campaign:
    spec: dict[str, object] = {
        "id": "c1",
        "sender": SENDER,
        "from_": "Ferry <news@example.com>",
        "subject": "Hello {{ first_name }}",
        "text": "Hello {{ first_name }}",
    }
    spec.update(overrides)
    return Campaign(**spec)  # type: ignore[arg-type]


def test_error_hierarchy() -> None:
    for cls in (ConfigError, TemplateError, ferrymail.TokenError):
        assert issubclass(cls, ferrymail.Error)
        assert issubclass(cls, ValueError)
    assert issubclass(ferrymail.InternalError, ferrymail.Error)
    assert issubclass(ferrymail.InternalError, RuntimeError)
    assert issubclass(ferrymail.WireError, ferrymail.Error)


def test_a_failed_rust_task_is_an_internal_error_with_its_panic_message() -> None:
    # A delivery task that fails (a panic in the core) reaches Python as
    # ferrymail.InternalError, not a bare RuntimeError; _failing_task fails as one would.
    async def main() -> None:
        await _core._failing_task("worker exploded")

    with pytest.raises(ferrymail.InternalError) as info:
        asyncio.run(main())
    assert isinstance(info.value, RuntimeError)
    assert "the delivery task panicked: worker exploded" in str(info.value)

    async def fine() -> None:
        await _core._failing_task("")

    asyncio.run(fine())  # the same path, without a panic, raises nothing


# ---- TemplateError: syntax errors name the part, line and column (1-based) ----


@pytest.mark.parametrize(
    ("overrides", "part", "line", "column"),
    [
        ({"subject": "Hello {{ first_name }"}, "subject", 1, 21),
        ({"html": "<html>\n<body>\n  <p>Grüße {{ name }</p>\n</body>"}, "html", 3, 20),
        ({"text": "Hello,\n\n  {{ 1 + }} and more"}, "text", 3, 10),
        ({"from_": "{{ brand } <news@example.com>"}, "from_", 1, 10),
        ({"reply_to": "{% for %}"}, "reply_to", 1, 8),
    ],
    ids=["subject", "html", "text", "from_", "reply_to"],
)
def test_template_syntax_error_names_part_line_and_column(
    overrides: dict[str, str], part: str, line: int, column: int
) -> None:
    with pytest.raises(TemplateError) as info:
        campaign(**overrides)
    e = info.value
    assert (e.part, e.line, e.column) == (part, line, column)
    assert part in str(e)
    assert isinstance(e, ferrymail.Error) and isinstance(e, ValueError)


def test_template_syntax_error_in_a_header_names_the_header() -> None:
    with pytest.raises(TemplateError) as info:
        campaign(headers={"Feedback-ID": "ok", "X-Campaign": "autumn/{{ segment }"})
    e = info.value
    assert "X-Campaign" in e.part
    assert "Feedback-ID" not in e.part
    assert (e.line, e.column) == (1, 19)


def test_unclosed_block_is_a_template_error() -> None:
    with pytest.raises(TemplateError) as info:
        campaign(text="{% if vip %}\nHello VIP\n")
    assert info.value.part == "text"


# ---- ConfigError: bad settings name the field ----


@pytest.mark.parametrize(
    "sender",
    ["", "bounces", "bounces@localhost", "bounce s@example.com", "bounces@[192.0.2.1]"],
)
def test_bad_sender(sender: str) -> None:
    with pytest.raises(ConfigError) as info:
        campaign(sender=sender)
    assert info.value.field == "sender"
    assert not isinstance(info.value, TemplateError)


def test_campaign_needs_html_or_text() -> None:
    with pytest.raises(ConfigError) as info:
        campaign(html=None, text=None)
    assert "html" in info.value.field and "text" in info.value.field


@pytest.mark.parametrize(
    "name",
    [
        "Bcc",
        "bcc",
        "BCC",
        "To",
        "From",
        "Subject",
        "Date",
        "Message-ID",
        "message-id",
        "Reply-To",
        "MIME-Version",
        "Content-Type",
        "Content-Transfer-Encoding",
        "List-Unsubscribe",
        "List-Unsubscribe-Post",
        "DKIM-Signature",
        "Return-Path",
    ],
)
def test_reserved_header_names(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        campaign(headers={name: "x@example.com"})
    assert name in info.value.field


@pytest.mark.parametrize("name", ["", "X Campaign", "X-Campaign:", "Fëedback-ID", "X-\x00"])
def test_malformed_header_names(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        campaign(headers={name: "x"})
    assert "headers" in info.value.field


@pytest.mark.parametrize(
    "base_url",
    [
        "ftp://t.example.com/c/",
        "t.example.com/c/",
        "https://t.example.com/c/ x",
        'https://t.example.com/c/"',
        "https://t.example.com/c/<x>",
        "https://t.exämple.com/c/",
        "javascript:alert(1)",
    ],
)
def test_bad_tracking_url(base_url: str) -> None:
    with pytest.raises(ConfigError) as info:
        campaign(tracking=Tracking(base_url=base_url, secret=SECRET))
    assert info.value.field == "tracking.base_url"


@pytest.mark.parametrize("secret", ["", "short", "x" * 15, b"\x00" * 15])
def test_short_tracking_secret(secret: str | bytes) -> None:
    with pytest.raises(ConfigError) as info:
        campaign(tracking=Tracking(base_url=TRACK, secret=secret))
    assert info.value.field == "tracking.secret"


@pytest.mark.parametrize("secret", ["x" * 16, b"\x00" * 16], ids=["text", "bytes"])
def test_sixteen_byte_secret_is_enough(secret: str | bytes) -> None:
    # Accepted, and what the links are signed with: their tokens verify with it.
    c = campaign(
        text="Hello {{ first_name }}, see https://shop.example.com/",
        tracking=Tracking(base_url=TRACK, secret=secret, opens=False),
    )
    message = rendered(c, Recipient("ann@example.com", {"first_name": "Ann"}))
    (claims,) = clicks(content(parse(message)), secret)  # type: ignore[arg-type]
    assert (claims.kind, claims.url) == ("click", "https://shop.example.com/")
    with pytest.raises(ferrymail.TokenError):
        clicks(content(parse(message)), "y" * 16)


def test_unsubscribe_url_without_any_secret() -> None:
    with pytest.raises(ConfigError) as info:
        campaign(unsubscribe=Unsubscribe(url=UNSUB))
    assert info.value.field == "unsubscribe.secret"


def test_unsubscribe_with_short_secret() -> None:
    with pytest.raises(ConfigError) as info:
        campaign(unsubscribe=Unsubscribe(url=UNSUB, secret="short"))
    assert info.value.field == "unsubscribe.secret"


@pytest.mark.parametrize(
    ("unsubscribe", "field"),
    [
        (Unsubscribe(), "unsubscribe"),
        (Unsubscribe(url="mailto:u@example.com", secret=SECRET), "unsubscribe.url"),
        (Unsubscribe(url="https://u.example.com/ x", secret=SECRET), "unsubscribe.url"),
        (Unsubscribe(mailto="not-an-address"), "unsubscribe.mailto"),
    ],
)
def test_bad_unsubscribe(unsubscribe: Unsubscribe, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        campaign(unsubscribe=unsubscribe)
    assert info.value.field == field


# ---- RenderError: one recipient, with the reason ----


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("ann.example.com", "'@'"),
        ("ann@localhost", "no dot"),
        ("a" * 65 + "@example.com", "64"),
        ("ann lee@example.com", "' '"),
        ("ann@exa mple.com", "' '"),
        ("ann@[192.0.2.1]", "literal"),
        ("ann@192.0.2.1", "numeric"),
        ("ann..lee@example.com", "dot"),
        ("@example.com", "local part"),
        ("ann@", "domain"),
        ("", "empty"),
        ("ann@" + "a" * 64 + ".com", "63"),
        ("ann@" + ".".join(["a" * 60] * 5) + ".com", "253"),
        ("a" * 64 + "@" + ".".join(["b" * 60] * 3) + ".example.com", "254"),
    ],
    ids=[
        "no-at",
        "no-dot",
        "long-local",
        "space-in-local",
        "space-in-domain",
        "address-literal",
        "ip-address",
        "double-dot",
        "empty-local",
        "empty-domain",
        "empty",
        "long-label",
        "long-domain",
        "long-mailbox",
    ],
)
def test_bad_address_fails_that_recipient_with_the_reason(address: str, why: str) -> None:
    results = ferrymail.render(
        campaign(),
        [
            Recipient("first@example.com", {"first_name": "A"}),
            Recipient(address, {"first_name": "B"}, id=2),
            Recipient("last@example.com", {"first_name": "C"}),
        ],
    )
    first, bad, last = results
    assert isinstance(first, RenderedMessage) and isinstance(last, RenderedMessage)
    assert isinstance(bad, RenderError)
    assert bad.recipient == Recipient(address, {"first_name": "B"}, id=2)
    assert "address" in bad.reason
    assert why in bad.reason


def test_undefined_variable_is_named() -> None:
    result = render_one(campaign(), Recipient("ann@example.com", {"firstname": "typo"}))
    assert isinstance(result, RenderError)
    assert "`first_name`" in result.reason
    assert "undefined" in result.reason
    assert "firstname" not in result.reason.replace("`first_name`", "")


@pytest.mark.parametrize("part", ["subject", "html", "text", "from_", "reply_to", "header"])
def test_undefined_variable_in_every_part(part: str) -> None:
    templates = {
        "subject": "Hi",
        "html": "<p>Hi</p>",
        "text": "Hi",
        "from_": "Ferry <news@example.com>",
        "reply_to": "help@example.com",
        "header": "x",
    }
    templates[part] = {
        "from_": "{{ missing_var }} <news@example.com>",
        "reply_to": "{{ missing_var }}@example.com",
    }.get(part, "Hi {{ missing_var }}")
    c = campaign(
        subject=templates["subject"],
        html=templates["html"],
        text=templates["text"],
        from_=templates["from_"],
        reply_to=templates["reply_to"],
        headers={"X-Segment": templates["header"]},
    )
    result = render_one(c, Recipient("ann@example.com"))
    assert isinstance(result, RenderError)
    assert "`missing_var`" in result.reason


def test_default_filter_opts_out_of_undefined() -> None:
    c = campaign(
        subject="Hello {{ first_name|default('friend') }}",
        text="Hello {{ first_name|default('friend') }}, {{ city|default('') }}!",
    )
    message = rendered(c, Recipient("ann@example.com"))
    assert b"Subject: Hello friend\r\n" in message.data
    assert message.data.endswith(b"Hello friend, !\r\n")


@pytest.mark.parametrize(
    "value",
    [
        dt.datetime(2026, 11, 29, 7, 0, tzinfo=dt.UTC),
        object(),
        2**70,
        -(2**64),
        {"nested": [1, object()]},
    ],
    ids=["aware-datetime", "object", "huge-int", "huge-negative-int", "nested-object"],
)
def test_unsupported_var_fails_only_that_recipient(value: object) -> None:
    c = campaign(text="Hello {{ first_name }}: {{ value }}")
    results = ferrymail.render(
        c,
        [
            Recipient("a@example.com", {"first_name": "A", "value": 1}),
            Recipient("b@example.com", {"first_name": "B", "value": value}),
            Recipient("c@example.com", {"first_name": "C", "value": [1, {"x": "y"}]}),
        ],
    )
    a, b, c_ = results
    assert isinstance(a, RenderedMessage) and isinstance(c_, RenderedMessage)
    assert isinstance(b, RenderError)
    assert b.recipient.address == "b@example.com"
    assert a.data.endswith(b"Hello A: 1\r\n")


def test_unsupported_var_in_a_large_batch_fails_only_that_recipient() -> None:
    # Large enough that the batch is rendered in parallel.
    c = campaign(text="Hello {{ first_name }}: {{ value }}")
    recipients = [
        Recipient(f"u{i}@example.com", {"first_name": f"U{i}", "value": i}, id=i)
        for i in range(300)
    ]
    recipients[150] = Recipient("bad@example.com", {"first_name": "X", "value": object()}, id=150)
    results = ferrymail.render(c, recipients)
    assert [isinstance(r, RenderError) for r in results] == [i == 150 for i in range(300)]
    for i, r in enumerate(results):
        assert r.recipient is recipients[i]
        if i != 150:
            assert isinstance(r, RenderedMessage)
            assert r.data.endswith(f"Hello U{i}: {i}\r\n".encode())


@pytest.mark.parametrize("key", [1, b"bytes", (1, 2)], ids=["int", "bytes", "tuple"])
def test_non_string_variable_names_fail_that_recipient(key: object) -> None:
    results = ferrymail.render(
        campaign(),
        [
            Recipient("a@example.com", {"first_name": "A", key: "x"}),  # type: ignore[dict-item]
            Recipient("b@example.com", {"first_name": "B"}),
        ],
    )
    assert isinstance(results[0], RenderError)
    assert isinstance(results[1], RenderedMessage)


@pytest.mark.parametrize(
    ("field", "overrides", "value"),
    [
        ("Subject", {"subject": "Hi {{ v }}"}, "x\r\nBcc: spy@example.com"),
        ("From", {"from_": "{{ v }} <news@example.com>"}, "Ann\nBcc: spy@example.com"),
        ("Reply-To", {"reply_to": "{{ v }} <help@example.com>"}, "Help\rBcc: spy@example.com"),
        ("X-Segment", {"headers": {"X-Segment": "{{ v }}"}}, "vip\r\n\r\n<html>"),
    ],
)
def test_header_injection_from_a_variable_is_a_render_error(
    field: str, overrides: dict[str, object], value: str
) -> None:
    c = campaign(**{"text": "Hello {{ v }}", **overrides})
    results = ferrymail.render(
        c,
        [
            Recipient("a@example.com", {"first_name": "A", "v": value}),
            Recipient("b@example.com", {"first_name": "B", "v": "fine"}),
        ],
    )
    bad, good = results
    assert isinstance(bad, RenderError)
    assert "header injection" in bad.reason
    assert field in bad.reason
    assert isinstance(good, RenderedMessage)
    assert b"spy@example.com" not in good.data


def test_bad_from_address_is_a_render_error() -> None:
    c = campaign(from_="Ferry <{{ v }}>")
    result = render_one(c, Recipient("a@example.com", {"first_name": "A", "v": "nobody"}))
    assert isinstance(result, RenderError)
    assert "From" in result.reason
    assert "'@'" in result.reason


@pytest.mark.parametrize(
    ("field", "value"),
    [("from_", "Ferry <news@localhost>"), ("reply_to", "no address here")],
)
def test_a_fixed_from_or_reply_to_is_checked_when_the_campaign_is_built(
    field: str, value: str
) -> None:
    with pytest.raises(ConfigError) as info:
        campaign(**{field: value})
    assert info.value.field == field
