"""Which recipient of the spool an inbound message is about: VERP token, quoted token, address.

The ways, surest first:
1. The VERP token of the address the message came to (bounces+TOKEN@…), or of the
   envelope sender the report quotes (a complaint goes to the feedback loop address,
   but quotes the original's Return-Path). It names the recipient's row, sealed.
2. A tracking or unsubscribe token in the quoted original's links or List-Unsubscribe:
   sealed too, naming campaign and recipient key.
3. The address the report names (Final-Recipient, Original-Rcpt-To, the To it
   quotes), among the recent campaigns' recipients keyed by their address; when the
   report quotes the original's Message-ID, the recipient whose Message-ID it is
   (ferrymail's Message-IDs are a digest of campaign and key: see `message_digest`),
   else the newest. Recipients the ESP gave ids to are found by 1 and 2 only.
A match by token must also agree with the address the report names, when it names one
the spool could hold: a message forwarded elsewhere may bounce there, and that bounce
says nothing about our recipient's mailbox.
"""

from __future__ import annotations

import hashlib
import re
import urllib.parse
from collections.abc import Iterable

from .. import verp
from ..errors import TokenError
from ..feedback import Feedback
from ..feedback.addresses import verp_token
from ..spool import Found, Spool, domain_key, suppression_key
from ..tracking import verify
from .config import InboundConfig

# A sealed token's alphabet and the least length of one (a version byte, a few bytes of
# claims and the 16-byte tag, in base64url).
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{24,}$")


def message_digest(campaign: str, key: str | int, *, address: bool) -> str:
    """The part of ferrymail's Message-ID before "@" for (campaign, key), as
    rust/src/render/campaign.rs's message_digest makes it: SHA-256 of the campaign's
    length and name and the tagged key, first 16 bytes in hex. `address`: the key is
    the recipient's address (no id given), which is tagged apart from a string id."""
    h = hashlib.sha256()
    h.update(len(campaign.encode()).to_bytes(8, "big"))
    h.update(campaign.encode())
    if address:
        h.update(b"a" + str(key).encode())
    elif isinstance(key, int):
        if key < 0 or key < 2**63:
            h.update(b"i" + key.to_bytes(8, "big", signed=True))
        else:
            h.update(b"u" + key.to_bytes(8, "big"))
    else:
        h.update(b"s" + key.encode())
    return h.hexdigest()[:32]


class Matcher:
    """Finds recipients for one listener: the secrets that open tokens, and the spool.
    Runs on the spool's thread (every look-up is a spool read)."""

    def __init__(self, spool: Spool, config: InboundConfig) -> None:
        self._spool = spool
        self._verp = config.verp_keys
        self._tracking = config.tracking_keys
        self._unsubscribe = config.unsubscribe_keys

    def by_verp(self, feedback: Feedback) -> tuple[Found, str] | None:
        """The recipient a VERP token names: the one the message came to, else the
        quoted envelope sender's."""
        original = feedback.original
        complaint = feedback.complaint
        candidates = [
            feedback.verp_token,
            verp_token(original.envelope_sender) if original else None,
            verp_token(complaint.original_mail_from) if complaint else None,
        ]
        for token in dict.fromkeys(t for t in candidates if t):
            row = verp.open_token(token, self._verp)
            if row is not None and (found := self._spool.find_recipient(row)) is not None:
                return found, "verp"
        return None

    def by_quoted_token(self, feedback: Feedback) -> tuple[Found, str] | None:
        """The recipient a tracking or unsubscribe token of the quoted original names."""
        original = feedback.original
        if original is None:
            return None
        for token, secrets in (
            *((t, self._unsubscribe) for t in _tokens(original.list_unsubscribe)),
            *((t, self._tracking) for t in _tokens(original.links)),
        ):
            for secret in secrets:
                try:
                    claims = verify(token, secret)
                except TokenError:
                    continue
                found = self._spool.find_by_key(claims.campaign, str(claims.recipient))
                if found is not None:
                    return found, f"{claims.kind} token"
        return None

    def by_address(self, address: str, message_id: str | None) -> tuple[Found, str] | None:
        """The recipient keyed by `address` whose Message-ID is `message_id`, else (no
        Message-ID quoted, or a Message-ID not ferrymail's) the newest."""
        candidates = self._spool.find_by_address(_key_form(address))
        if not candidates:
            return None
        digest = (message_id or "").partition("@")[0].lower()
        if digest:
            for found in candidates:
                if digest == message_digest(found.campaign, found.key, address=True):
                    return found, "message-id"
        return candidates[0], "address"

    def by_unsubscribe_token(self, token: str) -> tuple[str, str] | None:
        """(campaign, key) of a mailto unsubscribe's token."""
        for secret in self._unsubscribe:
            try:
                claims = verify(token, secret)
            except TokenError:
                continue
            if claims.kind == "unsubscribe":
                return claims.campaign, str(claims.recipient)
        return None


def same_mailbox(found: Found, address: str | None) -> bool:
    """Whether a report's address is the recipient's (True when it names none)."""
    return address is None or suppression_key(address) == suppression_key(found.address)


def _key_form(address: str) -> str:
    """An address as submit keys it (submit.key_of): the domain in lower-case A-labels."""
    local, at, domain = address.strip().strip("<>").rpartition("@")
    return f"{local}@{domain_key(domain)}" if at else address


def _tokens(uris: Iterable[str]) -> Iterable[str]:
    """Sealed-token candidates of URIs: each path segment that looks like one, and a
    mailto's subject=unsubscribe-TOKEN."""
    for uri in uris:
        try:
            parts = urllib.parse.urlsplit(uri.strip())
        except ValueError:
            continue
        if parts.scheme.lower() == "mailto":
            subject = urllib.parse.parse_qs(parts.query).get("subject", [""])[0]
            token = subject.strip().removeprefix("unsubscribe-")
            if _TOKEN.match(token):
                yield token
            continue
        for segment in reversed(parts.path.split("/")):
            if _TOKEN.match(segment):
                yield segment
