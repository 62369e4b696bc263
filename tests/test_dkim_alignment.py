"""DKIM alignment with the From domain (DMARC relaxed alignment), unaligned extra
signatures, and key sets that pick each recipient's key by its From domain; every
signature checked by dkimpy."""

from __future__ import annotations

import base64
import re

import dkim
import ferrymail
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from ferrymail import DkimKey, DkimKeys, Recipient, RenderedMessage, RenderError


class Dns:
    """Ed25519 keys per (domain, selector) and the TXT records dkimpy looks up."""

    def __init__(self) -> None:
        self.records: dict[bytes, bytes] = {}

    def key(self, domain: str, selector: str = "s1", **kwargs: object) -> DkimKey:
        private = ed25519.Ed25519PrivateKey.generate()
        raw = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.records[f"{selector}._domainkey.{domain}.".encode()] = (
            b"v=DKIM1; k=ed25519; p=" + base64.b64encode(raw)
        )
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        return DkimKey(domain, selector, pem, **kwargs)  # type: ignore[arg-type]

    def dns(self, name: bytes, timeout: int = 5) -> bytes | None:
        return self.records.get(name)

    def signatures(self, data: bytes) -> list[tuple[str, bool]]:
        """(d=, verifies) of each DKIM-Signature, in order."""
        found = []
        for i in range(data.count(b"DKIM-Signature:")):
            d = dkim.DKIM(data)
            ok = bool(d.verify(idx=i, dnsfunc=self.dns))
            found.append((d.domain.decode(), ok))
        return found


@pytest.fixture(scope="module")
def dns() -> Dns:
    return Dns()


def campaign(from_: str, keys: object) -> ferrymail.Campaign:
    return ferrymail.Campaign(
        id="align",
        sender="bounces@esp.example.org",
        from_=from_,
        subject="Hi {{ name }}",
        text="Hello {{ name }}\n",
        dkim=keys,  # type: ignore[arg-type]
    )


def render(c: ferrymail.Campaign, **vars: str) -> RenderedMessage | RenderError:
    (result,) = ferrymail.render(c, [Recipient("ann@example.net", {"name": "Ann", **vars})])
    return result


@pytest.mark.parametrize(
    ("from_domain", "d"),
    [
        ("example.com", "example.com"),
        ("news.example.com", "example.com"),
        ("example.com", "mail.example.com"),
        ("a.example.co.uk", "b.example.co.uk"),
    ],
)
def test_an_aligned_key_signs(dns: Dns, from_domain: str, d: str) -> None:
    result = render(campaign(f"Shop <news@{from_domain}>", dns.key(d)))
    assert isinstance(result, RenderedMessage), result
    assert dns.signatures(result.data) == [(d, True)]


@pytest.mark.parametrize(
    ("from_domain", "d"),
    [
        ("example.com", "example.net"),
        ("example.co.uk", "other.co.uk"),  # one public suffix, two organisations
        ("alice.github.io", "bob.github.io"),  # the list's private section counts too
        ("customer.example", "esp.example.org"),
    ],
)
def test_an_unaligned_key_is_refused_when_the_campaign_is_built(
    dns: Dns, from_domain: str, d: str
) -> None:
    with pytest.raises(ferrymail.ConfigError) as raised:
        campaign(f"news@{from_domain}", dns.key(d, "sel9"))
    message = str(raised.value)
    assert f"{d}/sel9" in message and "not aligned" in message and from_domain in message


def test_an_unaligned_extra_signature_beside_an_aligned_one(dns: Dns) -> None:
    keys = [dns.key("customer.example"), dns.key("esp.example.org", aligned=False)]
    result = render(campaign("Customer <news@customer.example>", keys))
    assert isinstance(result, RenderedMessage), result
    assert dns.signatures(result.data) == [("customer.example", True), ("esp.example.org", True)]
    with pytest.raises(ferrymail.ConfigError, match="beside an aligned one"):
        campaign("news@customer.example", dns.key("esp.example.org", "s2", aligned=False))


def test_a_from_template_with_a_fixed_domain_is_checked_when_built(dns: Dns) -> None:
    with pytest.raises(ferrymail.ConfigError, match="not aligned"):
        campaign("{{ name }} <news@example.com>", dns.key("example.net"))
    result = render(campaign("{{ name }} <news@example.com>", dns.key("example.com")))
    assert isinstance(result, RenderedMessage), result


def test_a_key_set_signs_each_recipient_with_its_from_domains_key(dns: Dns) -> None:
    keys = DkimKeys(
        {
            "customer-a.example": dns.key("customer-a.example"),
            "customer-b.example.net": dns.key("mail.customer-b.example.net"),
            "news.customer-b.example.net": dns.key("news.customer-b.example.net"),
        }
    )
    c = campaign("{{ brand }} <news@{{ domain }}>", [keys, dns.key("esp.example", aligned=False)])
    recipients = [
        Recipient("r1@example.net", {"name": "A", "brand": "A", "domain": "customer-a.example"}),
        Recipient(
            "r2@example.net", {"name": "B", "brand": "B", "domain": "customer-b.example.net"}
        ),
        # Below a domain of the set: its nearest key up to the organisational domain.
        Recipient("r3@example.net", {"name": "C", "brand": "C", "domain": "eu.customer-a.example"}),
        Recipient(
            "r4@example.net",
            {"name": "D", "brand": "D", "domain": "x.news.customer-b.example.net"},
        ),
        Recipient("r5@example.net", {"name": "E", "brand": "E", "domain": "stranger.example"}),
        Recipient("r6@example.net", {"name": "F", "brand": "F", "domain": "CUSTOMER-A.example"}),
    ]
    results = ferrymail.render(c, recipients)
    signed = [
        dns.signatures(r.data) if isinstance(r, RenderedMessage) else r.reason for r in results
    ]
    esp = ("esp.example", True)
    assert signed[0] == [("customer-a.example", True), esp]
    assert signed[1] == [("mail.customer-b.example.net", True), esp]
    assert signed[2] == [("customer-a.example", True), esp]
    assert signed[3] == [("news.customer-b.example.net", True), esp]
    assert isinstance(signed[4], str) and "no key for the From domain stranger.example" in signed[4]
    assert signed[5] == [("customer-a.example", True), esp]


def test_a_key_set_is_checked_when_built(dns: Dns) -> None:
    with pytest.raises(ferrymail.ConfigError, match=re.escape("not aligned with shop.example")):
        campaign("news@{{ d }}", DkimKeys({"shop.example": dns.key("other.example")}))
    with pytest.raises(ferrymail.ConfigError, match="empty"):
        campaign("news@{{ d }}", DkimKeys({}))
    with pytest.raises(
        ferrymail.ConfigError, match=re.escape("no key for the From domain example.com")
    ):
        campaign("news@example.com", DkimKeys({"shop.example": dns.key("shop.example")}))
    with pytest.raises(ferrymail.ConfigError, match="cannot be aligned=False"):
        campaign(
            "news@{{ d }}",
            DkimKeys({"shop.example": dns.key("shop.example", aligned=False)}),
        )


def test_a_fixed_key_with_a_from_domain_that_varies_fails_only_unaligned_recipients(
    dns: Dns,
) -> None:
    c = campaign("news@{{ domain }}", dns.key("example.com"))
    ok = render(c, domain="mail.example.com")
    assert isinstance(ok, RenderedMessage), ok
    assert dns.signatures(ok.data) == [("example.com", True)]
    bad = render(c, domain="example.org")
    assert isinstance(bad, RenderError)
    assert "not aligned with the From domain example.org" in bad.reason
    assert "DkimKeys" in bad.reason
