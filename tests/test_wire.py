"""Conformance of the wire contract: each struct of python/ferrymail/wire.py, encoded by
msgspec, decoded and re-encoded by rust/src/wire.rs, comes back byte for byte."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from ferrymail import _core, sample
from ferrymail.errors import WireError
from ferrymail.wire import (
    CampaignSpec,
    ConnectionRate,
    DkimKeySpec,
    MxHost,
    Outcome,
    OutcomeKind,
    Recipient,
    RenderOutcome,
    Route,
    SessionTimeouts,
    SmtpOptions,
    TrackingSpec,
    UnsubscribeSpec,
    VerpSpec,
)
from hypothesis import given, settings
from hypothesis import strategies as st

TRACKING = TrackingSpec(
    base_url="https://t.example.com/c/", secret=b"k" * 32, opens=True, clicks=False
)
UNSUBSCRIBE = UnsubscribeSpec(
    url="https://t.example.com/u/", mailto="u@example.com", secret=b"\x00\xff" * 9
)

ED25519_PEM = (
    "-----BEGIN PRIVATE KEY-----\n"
    "MC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF\n"
    "-----END PRIVATE KEY-----\n"
)
DKIM_DEFAULTS = DkimKeySpec(
    domain="example.com",
    selector="s2026",
    private_key=ED25519_PEM,
    algorithm=None,
    headers=None,
    canonicalization="relaxed/relaxed",
)
DKIM_EXPLICIT = DkimKeySpec(
    domain="bücher.example",
    selector="rsa-2026",
    private_key="-----BEGIN RSA PRIVATE KEY-----\n"
    + "A" * 1600
    + "\n-----END RSA PRIVATE KEY-----\n",
    algorithm="rsa-sha256",
    headers=["From", "To", "Subject", "Date", "Message-ID", "Feedback-ID", "From"],
    canonicalization="simple/simple",
)

NESTED = {
    "first_name": "Zoë",
    "emoji": "🎉" * 40,
    "empty": "",
    "small_ints": [0, 1, -1, 127, 128, -32, -33, 255, 256, -128, -129],
    "wide_ints": [65_535, 65_536, -32_768, -32_769, 2**32 - 1, 2**32, -(2**31), -(2**31) - 1],
    "extremes": [2**63 - 1, 2**64 - 1, -(2**63)],
    "floats": [0.0, -1.5, 1e300, float("inf")],
    "flags": [True, False, None],
    "binary": b"\x00\x01\xff",
    "long": "x" * 70_000,
    "nested": {"a": [{"b": {"c": [[], {}, ["deep"]]}}], "ü": {"ß": 1}},
}

INSTANCES: dict[str, list[tuple[str, msgspec.Struct]]] = {
    "TrackingSpec": [
        ("opens-only", TRACKING),
        ("long-secret", TrackingSpec("https://t.example.com/", b"s" * 300, False, True)),
    ],
    "UnsubscribeSpec": [
        ("both", UNSUBSCRIBE),
        ("none", UnsubscribeSpec(url=None, mailto=None, secret=b"")),
        ("mailto-only", UnsubscribeSpec(url=None, mailto="ü@bücher.example", secret=b"x" * 16)),
    ],
    "VerpSpec": [("secret", VerpSpec(secret=b"\x00v" * 12))],
    "DkimKeySpec": [
        ("defaults", DKIM_DEFAULTS),
        ("explicit", DKIM_EXPLICIT),
        ("empty-header-list", msgspec.structs.replace(DKIM_DEFAULTS, headers=[])),
        (
            "unaligned-and-key-set",
            msgspec.structs.replace(DKIM_DEFAULTS, aligned=False, for_domain="shop.example"),
        ),
    ],
    "CampaignSpec": [
        ("sample", sample.campaign().spec),
        (
            "minimal",
            CampaignSpec(
                id="c",
                sender="b@example.com",
                from_="f@example.com",
                subject="",
                html=None,
                text="t",
                reply_to=None,
                headers=[],
                tracking=None,
                unsubscribe=None,
            ),
        ),
        (
            "unicode-and-everything",
            CampaignSpec(
                id="herbst-2026-ü",
                sender="bounces@bücher.example",
                from_="{{ brand }} 🚢 <news@example.com>",
                subject="Grüße {{ first_name }}" * 100,
                html="<p>{{ x }}</p>" * 5000,
                text="",
                reply_to="Hilfe <hilfe@example.com>",
                headers=[("Feedback-ID", "a:b:c"), ("X-Ü", "ü" * 300)],
                tracking=TRACKING,
                unsubscribe=UNSUBSCRIBE,
                dkim=[DKIM_EXPLICIT, DKIM_DEFAULTS],
                verp=VerpSpec(secret=b"v" * 16),
            ),
        ),
    ],
    "Recipient": [
        ("address-only", Recipient("ann@example.com")),
        ("int-id", Recipient("ann@example.com", {"first_name": "Ann"}, id=42)),
        ("negative-id", Recipient("ann@example.com", {}, id=-7)),
        ("i64-extremes-max", Recipient("ann@example.com", {}, id=2**63 - 1)),
        ("i64-extremes-min", Recipient("ann@example.com", {}, id=-(2**63))),
        ("str-id", Recipient("jürgen@bücher.example", {"x": 1}, id="crm-ü-0042")),
        ("empty-str-id", Recipient("a@example.com", {}, id="")),
        ("nested-vars", Recipient("ann@example.com", NESTED, id=7)),
        ("u64-id", Recipient("ann@example.com", {}, id=2**63)),
    ],
    "RenderOutcome": [
        (
            "message",
            RenderOutcome(
                envelope_from="b@example.com",
                data=b"Date: x\r\n\r\nbody\r\n" * 5000,
                message_id="<abc@example.com>",
                error=None,
                smtputf8=True,
                rcpt_to="jürgen@xn--bcher-kva.example",
            ),
        ),
        (
            "error",
            RenderOutcome(
                envelope_from="b@example.com",
                data=None,
                message_id=None,
                error='invalid recipient address "x": ü',
                smtputf8=False,
                rcpt_to=None,
            ),
        ),
        (
            "empty-values",
            RenderOutcome(
                envelope_from="", data=b"", message_id="", error="", smtputf8=False, rcpt_to=""
            ),
        ),
    ],
    "SmtpOptions": [
        ("defaults", SmtpOptions("mta1.example.com")),
        (
            "everything-set",
            SmtpOptions(
                "[192.0.2.1]",
                tls="required",
                source_address="2001:db8::25",
                connect_timeout=0.25,
                max_connections_per_host=1,
                max_messages_per_connection=2**32 - 1,
                idle_timeout=1e-3,
                greeting_timeout=1.5,
                ehlo_timeout=2.5,
                starttls_timeout=3.5,
                mail_timeout=4.5,
                rcpt_timeout=5.5,
                data_timeout=6.5,
                data_block_timeout=7.5,
                dot_timeout=86_400.0,
                ca_file="/etc/ferrymail/ca ü.pem",
            ),
        ),
    ],
    "MxHost": [
        ("v4-and-v6", MxHost("mx1.example.com.", ["192.0.2.25", "2001:db8::25"])),
        ("no-addresses-high-port", MxHost("mx.bücher.example", [], port=65_535)),
    ],
    "SessionTimeouts": [
        ("defaults", SessionTimeouts()),
        (
            "everything-set",
            SessionTimeouts(0.25, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5, 86_400.0),
        ),
    ],
    "ConnectionRate": [
        ("site", ConnectionRate("gmail.com", 10.0)),
        ("site-and-source", ConnectionRate("gmail.com\x00mta21", 0.25)),
    ],
    "Route": [
        ("empty", Route([])),
        ("two-hosts", Route([MxHost("a.example", ["127.0.0.2"], 2525), MxHost("b", ["::1"])])),
        (
            "every-egress-setting",
            Route(
                [MxHost("mx.example", ["192.0.2.25"])],
                max_connections=3,
                max_messages_per_connection=50,
                source_address="2001:db8::21",
                helo_name="mta21.example.com",
                tls="required",
                timeouts=SessionTimeouts(greeting_timeout=0.5),
                connection_rates=[
                    ConnectionRate("gmail.com", 10.0),
                    ConnectionRate("gmail.com\x00mta21", 2.5),
                ],
            ),
        ),
        ("source-only", Route([], source_address="127.0.0.21")),
    ],
    "Outcome": [
        (
            "delivered",
            Outcome(
                status="delivered",
                code=250,
                enhanced="2.0.0",
                text="Ok: queued as 4Zk1",
                stage="dot",
                mx="mx1.example.com",
                address="2001:db8::25",
                tls="TLSv1.3",
                elapsed_ms=12.625,
                message_id="<abc@example.com>",
                kind=OutcomeKind.REPLY,
                source="2001:db8::21",
            ),
        ),
        (
            "no-reply",
            Outcome(
                status="transient",
                code=None,
                enhanced=None,
                text="connect failed: Connection refused (os error 111)",
                stage="connect",
                mx=None,
                address=None,
                tls=None,
                elapsed_ms=0.0,
                message_id=None,
                kind=OutcomeKind.REFUSED,
            ),
        ),
    ],
}

CASES = [
    pytest.param(kind, instance, id=f"{kind}-{name}")
    for kind, instances in INSTANCES.items()
    for name, instance in instances
]


@pytest.mark.parametrize(("kind", "instance"), CASES)
def test_rust_re_encodes_what_python_encoded_byte_for_byte(
    kind: str, instance: msgspec.Struct
) -> None:
    data = msgspec.msgpack.encode(instance)
    assert _core.wire_roundtrip(kind, data) == data
    # And what comes back decodes to the same struct in Python.
    assert msgspec.msgpack.decode(data, type=type(instance)) == instance


def test_every_wire_struct_is_covered() -> None:
    from ferrymail import wire

    structs = {
        name
        for name, obj in vars(wire).items()
        if isinstance(obj, type) and issubclass(obj, msgspec.Struct) and obj is not msgspec.Struct
    }
    assert structs == set(INSTANCES)


#: Where `kind` is in an encoded Outcome.
KIND = Outcome.__struct_fields__.index("kind")


@pytest.mark.parametrize("kind", list(OutcomeKind))
def test_every_outcome_kind_means_the_same_on_both_sides(kind: OutcomeKind) -> None:
    outcome = Outcome.without_reply("transient", "connect", "x", kind=kind)
    data = msgspec.msgpack.encode(outcome)
    assert _core.wire_roundtrip("Outcome", data) == data
    # The value crosses as the kebab-case string itself, not an index.
    assert msgspec.msgpack.decode(data)[KIND] == kind.value


def test_an_unknown_outcome_kind_is_a_wire_error() -> None:
    outcome = Outcome.without_reply("transient", "connect", "x", kind=OutcomeKind.INTERNAL)
    fields = msgspec.msgpack.decode(msgspec.msgpack.encode(outcome))
    with pytest.raises(WireError, match="Outcome"):
        _core.wire_roundtrip("Outcome", msgspec.msgpack.encode([*fields[:KIND], "exploded"]))


def test_an_outcome_without_a_kind_decodes_as_internal() -> None:
    # An outcome written before `kind` existed (ten fields) still decodes on both sides.
    old = msgspec.msgpack.encode(
        ["transient", None, None, "x", "connect", None, None, None, 0.0, None]
    )
    assert msgspec.msgpack.decode(old, type=Outcome).kind is OutcomeKind.INTERNAL
    again = msgspec.msgpack.decode(_core.wire_roundtrip("Outcome", old), type=Outcome)
    assert again.kind is OutcomeKind.INTERNAL


def test_a_route_or_outcome_of_an_older_ferrymail_decodes_with_defaults() -> None:
    # A route without the egress settings (three fields) and an outcome without a
    # source (eleven) decode on both sides, the missing fields taking their defaults.
    old_route = msgspec.msgpack.encode([[], 2, 0])
    again = msgspec.msgpack.decode(_core.wire_roundtrip("Route", old_route), type=Route)
    assert again == Route([], max_connections=2)
    # One written before connection_rates (seven fields): no buckets.
    before_rates = msgspec.msgpack.encode([[], 0, 0, "127.0.0.21", None, None, None])
    again = msgspec.msgpack.decode(_core.wire_roundtrip("Route", before_rates), type=Route)
    assert again == Route([], source_address="127.0.0.21") and again.connection_rates == []
    old_outcome = msgspec.msgpack.encode(
        ["delivered", 250, None, "ok", "dot", None, None, None, 1.0, None, "reply"]
    )
    again_outcome = msgspec.msgpack.decode(
        _core.wire_roundtrip("Outcome", old_outcome), type=Outcome
    )
    assert again_outcome.source is None and again_outcome.kind is OutcomeKind.REPLY


def test_unknown_kind_and_bad_bytes_are_wire_errors() -> None:
    with pytest.raises(WireError):
        _core.wire_roundtrip("DeliveryBatch?", msgspec.msgpack.encode(TRACKING))
    with pytest.raises(WireError):
        _core.wire_roundtrip("TrackingSpec", b"\xc1")
    with pytest.raises(WireError):
        _core.wire_roundtrip("TrackingSpec", msgspec.msgpack.encode(UNSUBSCRIBE))


def _values() -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**64 - 1),
        st.floats(allow_nan=False),
        st.text(max_size=40),
        st.binary(max_size=40),
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=10), inner, max_size=5)
        ),
        max_leaves=30,
    )


@settings(max_examples=200)
@given(
    address=st.text(max_size=60),
    vars=st.dictionaries(st.text(max_size=20), _values(), max_size=8),
    id=st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1), st.text(max_size=30)),
)
def test_any_recipient_round_trips(
    address: str, vars: dict[str, Any], id: int | str | None
) -> None:
    data = msgspec.msgpack.encode(Recipient(address, vars, id))
    assert _core.wire_roundtrip("Recipient", data) == data
