"""DKIM signatures of rendered messages, verified by dkimpy (an independent implementation)
with the public keys served through its DNS hook."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable

import dkim
import ferrymail
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from ferrymail import DkimKey, Recipient
from hypothesis import given, settings
from hypothesis import strategies as st

DOMAIN = "example.com"
PEM = serialization.Encoding.PEM
NO_PASSWORD = serialization.NoEncryption()


def _rsa_pem(bits: int, pkcs1: bool = False) -> tuple[str, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    fmt = (
        serialization.PrivateFormat.TraditionalOpenSSL
        if pkcs1
        else serialization.PrivateFormat.PKCS8
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key.private_bytes(
        PEM, fmt, NO_PASSWORD
    ).decode(), b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)


def _ed25519_pem() -> tuple[str, bytes]:
    key = ed25519.Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    pem = key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, NO_PASSWORD).decode()
    return pem, b"v=DKIM1; k=ed25519; p=" + base64.b64encode(raw)


class Keys:
    """Test keys, and the DNS the verifier sees: selector._domainkey.domain TXT records."""

    def __init__(self) -> None:
        self.records: dict[bytes, bytes] = {}
        self.pem: dict[str, str] = {}
        for selector, (pem, txt) in {
            "rsa": _rsa_pem(2048),
            "rsa1": _rsa_pem(2048, pkcs1=True),
            "rsa4k": _rsa_pem(4096),
            "ed": _ed25519_pem(),
        }.items():
            self.pem[selector] = pem
            self.records[f"{selector}._domainkey.{DOMAIN}.".encode()] = txt

    def key(self, selector: str, **kwargs: object) -> DkimKey:
        return DkimKey(DOMAIN, selector, self.pem[selector], **kwargs)  # type: ignore[arg-type]

    def dns(self, name: bytes, timeout: int = 5) -> bytes | None:
        return self.records.get(name)

    def verify_all(self, data: bytes) -> list[bool]:
        count = len(re.findall(rb"^DKIM-Signature:", data, flags=re.M))
        return [self._verify(data, i) for i in range(count)]

    def _verify(self, data: bytes, index: int) -> bool:
        try:
            return bool(dkim.DKIM(data).verify(idx=index, dnsfunc=self.dns))
        except dkim.ValidationError:  # dkimpy raises on a body hash mismatch
            return False


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


def campaign(keys_: list[DkimKey], **parts: object) -> ferrymail.Campaign:
    args: dict[str, object] = {
        "subject": "Grüße, {{ name }} 🎉",
        "html": '<html><body><p>Hallo {{ name }}, <a href="https://shop.example.com/x?a=1&amp;b=2">'
        "shop</a></p></body></html>",
        "text": "Hallo {{ name }}\nhttps://shop.example.com/x?a=1&b=2\n",
    }
    args.update(parts)
    return ferrymail.Campaign(
        id="dkim-test",
        sender="bounces@example.com",
        from_="Zoë Ångström <news@example.com>",
        reply_to="Help Desk <help@example.com>",
        headers={"Feedback-ID": "c1:news:ferry"},
        tracking=ferrymail.Tracking("https://t.example.com/c/", "tracking-secret-0123456789"),
        unsubscribe=ferrymail.Unsubscribe(url="https://t.example.com/u/", mailto="u@example.com"),
        dkim=keys_,
        **args,  # type: ignore[arg-type]
    )


def data_of(c: ferrymail.Campaign, name: str = "Ann", address: str = "ann@example.net") -> bytes:
    (result,) = ferrymail.render(c, [Recipient(address, {"name": name}, id=1)])
    assert isinstance(result, ferrymail.RenderedMessage), result
    return result.data


SHAPES: dict[str, dict[str, object]] = {
    "multipart": {},
    "html-only": {"text": None},
    "text-only": {"html": None},
    "long-lines": {"text": "{{ name }} " + "x" * 10_000 + "\n" + "y " * 3000, "html": None},
    "non-ascii-body": {"text": "日本語のテキスト {{ name }}\n" * 20},
    "trailing-blank-lines": {"text": "Hallo {{ name }}\n\n\n\n", "html": None},
    "spaces-in-lines": {"text": "a  b\t\tc   \n   \nend  \n", "html": None},
}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("canonicalization", ["relaxed/relaxed", "simple/simple"])
@pytest.mark.parametrize("selector", ["rsa", "rsa1", "ed"])
def test_every_shape_verifies(keys: Keys, shape: str, canonicalization: str, selector: str) -> None:
    c = campaign([keys.key(selector, canonicalization=canonicalization)], **SHAPES[shape])
    data = data_of(c)
    assert keys.verify_all(data) == [True]
    field = data.split(b"\r\n\r\n", 1)[0].decode()
    assert f"c={canonicalization};" in field
    assert re.search(r";\s*l=", field) is None, "never l="


def test_two_keys_give_two_signatures_that_both_verify(keys: Keys) -> None:
    data = data_of(campaign([keys.key("ed"), keys.key("rsa4k")]))
    assert data.count(b"DKIM-Signature:") == 2
    assert b"a=ed25519-sha256" in data and b"a=rsa-sha256" in data
    assert keys.verify_all(data) == [True, True]


def _signed_names(data: bytes) -> list[str]:
    signature = data.split(b"\r\n\r\n", 1)[0].decode().split("DKIM-Signature:")[1]
    h = re.search(r"h=([^;]+);", signature)
    assert h is not None
    return re.sub(r"\s", "", h.group(1)).split(":")


def test_signed_headers_by_default_are_oversigned(keys: Keys) -> None:
    data = data_of(campaign([keys.key("rsa")]))
    assert keys.verify_all(data) == [True]
    # Each field a reader sees or a receiver judges by: once per instance, once more.
    # Cc and Content-Transfer-Encoding are absent: listed once, so none can be added.
    assert _signed_names(data) == [
        *["from", "from", "to", "to", "cc", "reply-to", "reply-to", "subject", "subject"],
        *["date", "date", "message-id", "message-id", "mime-version", "mime-version"],
        *["content-type", "content-type", "content-transfer-encoding"],
        *["list-unsubscribe", "list-unsubscribe", "list-unsubscribe-post"],
        *["list-unsubscribe-post", "list-id", "feedback-id"],
    ]


REPLAYED = {
    "Subject": b"Subject: You won a prize\r\n",
    "From": b"From: evil@example.org\r\n",
    "List-Unsubscribe": b"List-Unsubscribe: <https://evil.example.org/u>\r\n",
    "List-Unsubscribe-Post": b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
    "To": b"To: someone-else@example.org\r\n",
    "Reply-To": b"Reply-To: evil@example.org\r\n",
    "Cc": b"Cc: many@example.org\r\n",
    "Content-Type": b"Content-Type: text/plain\r\n",
    "Content-Transfer-Encoding": b"Content-Transfer-Encoding: base64\r\n",
    "Message-ID": b"Message-ID: <other@example.org>\r\n",
    "Date": b"Date: Mon, 1 Jan 2035 00:00:00 +0000\r\n",
}


@pytest.mark.parametrize("header", REPLAYED)
@pytest.mark.parametrize("selector", ["rsa", "ed"])
def test_a_replayed_message_with_a_field_added_does_not_verify(
    keys: Keys, header: str, selector: str
) -> None:
    data = data_of(campaign([keys.key(selector)]))
    assert keys.verify_all(data) == [True]
    head, body = data.split(b"\r\n\r\n", 1)
    signatures, _, fields = head.partition(b"\r\nDate:")
    fields = b"Date:" + fields + b"\r\n"
    # Prepended (what a receiver shows first), between the signature and the rest, and
    # appended at the end of the header: each breaks the signature.
    for forged in (
        signatures + b"\r\n" + REPLAYED[header] + fields + b"\r\n" + body,
        REPLAYED[header] + data,
        head + b"\r\n" + REPLAYED[header] + b"\r\n" + body,
    ):
        assert keys.verify_all(forged) == [False], header


def test_unlisted_extra_header_added_still_verifies(keys: Keys) -> None:
    """The check above can fail: a field outside the signed list leaves it valid."""
    data = data_of(campaign([keys.key("rsa")]))
    assert keys.verify_all(b"X-Mailer: replayed\r\n" + data) == [True]


def test_sender_list_id_feedback_id_and_bimi_selector_are_signed_when_present(
    keys: Keys,
) -> None:
    extra = {
        "Sender": "Mail Robot <robot@example.com>",
        "List-Id": "News <news.example.com>",
        "Feedback-ID": "c1:news:ferry",
        "BIMI-Selector": "v=BIMI1; s=brand",
        "X-Campaign": "autumn",
    }
    c = ferrymail.Campaign(
        id="present",
        sender="bounces@example.com",
        from_="news@example.com",
        subject="Hi",
        text="Hello\n",
        headers=extra,
        dkim=keys.key("ed"),
    )
    data = data_of(c)
    assert keys.verify_all(data) == [True]
    names = _signed_names(data)
    for name in ("sender", "list-id", "feedback-id", "bimi-selector"):
        assert names.count(name) == 1, (name, names)
    assert "x-campaign" not in names
    for name, value in extra.items():
        if name == "X-Campaign":
            continue
        changed = data.replace(f"{name}: {value}".encode(), f"{name}: {value}x".encode())
        assert changed != data
        assert keys.verify_all(changed) == [False], name


def test_custom_header_list_must_include_from(keys: Keys) -> None:
    data = data_of(campaign([keys.key("rsa", headers=["From", "Subject"])]))
    assert keys.verify_all(data) == [True]
    with pytest.raises(ferrymail.ConfigError, match="include From"):
        campaign([keys.key("rsa", headers=["Subject"])])


@pytest.mark.parametrize("selector", ["rsa", "ed"])
def test_one_changed_byte_breaks_the_signature(keys: Keys, selector: str) -> None:
    data = data_of(campaign([keys.key(selector)], html=None))
    assert keys.verify_all(data) == [True]
    head, body = data.split(b"\r\n\r\n", 1)
    i = body.index(b"Hallo") + 1
    assert keys.verify_all(head + b"\r\n\r\n" + body[:i] + b"X" + body[i + 1 :]) == [False]
    subject = re.search(rb"\r\nSubject: ", data)
    assert subject is not None
    j = subject.end() + 3
    tampered = data[:j] + bytes([data[j] ^ 1]) + data[j + 1 :]
    assert keys.verify_all(tampered) == [False]


@settings(max_examples=1000)
@given(name=st.text(max_size=200), local=st.from_regex(r"[a-z0-9_%+-]{1,20}", fullmatch=True))
def test_random_variables_always_verify(keys: Keys, name: str, local: str) -> None:
    c = _hypothesis_campaign(keys)
    (result,) = ferrymail.render(c, [Recipient(f"x{local}x@example.net", {"name": name})])
    if isinstance(result, ferrymail.RenderError):
        # Only a CR, LF or control character in a header value may fail a recipient.
        assert "header injection" in result.reason
        assert any((ord(ch) < 32 and ch != "\t") or ord(ch) == 127 for ch in name)
        return
    assert keys.verify_all(result.data) == [True, True]


_campaigns: dict[int, ferrymail.Campaign] = {}


def _hypothesis_campaign(keys: Keys) -> ferrymail.Campaign:
    # Built once: hypothesis calls the test a thousand times with the same fixture.
    if id(keys) not in _campaigns:
        _campaigns[id(keys)] = campaign(
            [keys.key("ed"), keys.key("rsa", canonicalization="simple/simple")]
        )
    return _campaigns[id(keys)]


BadKey = Callable[[], str]


def _ec_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        PEM, serialization.PrivateFormat.TraditionalOpenSSL, NO_PASSWORD
    ).decode()


@pytest.mark.parametrize(
    ("make_pem", "why"),
    [
        (lambda: "not a key", "not a readable PEM"),
        (lambda: "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "must be RSA"),
        (_ec_pem, "EC"),
        (lambda: _rsa_pem(1024)[0], "2048"),
        (lambda: _rsa_pem(1024, pkcs1=True)[0], "1024-bit keys are refused"),
    ],
)
def test_bad_keys_fail_the_campaign_naming_domain_and_selector(make_pem: BadKey, why: str) -> None:
    with pytest.raises(ferrymail.ConfigError) as raised:
        ferrymail.Campaign(
            "c",
            "a@example.com",
            "a@example.com",
            "s",
            text="x",
            dkim=DkimKey("example.com", "sel2024", make_pem()),
        )
    message = str(raised.value)
    assert "example.com/sel2024" in message and why in message, message
    assert isinstance(raised.value, ferrymail.Error)


def test_algorithm_must_match_the_key(keys: Keys) -> None:
    with pytest.raises(ferrymail.ConfigError, match="does not match"):
        campaign([keys.key("ed", algorithm="rsa-sha256")])
    with pytest.raises(ferrymail.ConfigError, match="unknown algorithm"):
        campaign([keys.key("rsa", algorithm="rsa-sha1")])
    assert keys.verify_all(data_of(campaign([keys.key("ed", algorithm="ed25519-sha256")]))) == [
        True
    ]
