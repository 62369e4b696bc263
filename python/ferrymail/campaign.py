"""Campaign, Tracking, Unsubscribe, Verp and DKIM keys: what an ESP hands over, checked and
compiled once."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import msgspec

from . import _core
from .errors import ConfigError
from .wire import CampaignSpec, DkimKeySpec, TrackingSpec, UnsubscribeSpec, VerpSpec

_encoder = msgspec.msgpack.Encoder()


class Tracking(msgspec.Struct, frozen=True):
    """Click and open tracking. Each tracked http(s) link becomes `base_url` joined with
    an opaque token (its own path segment: `https://t.example.com/c` gives
    `https://t.example.com/c/TOKEN`; a query in `base_url` stays after the token) that
    names campaign, recipient, link number and URL, encrypted and authenticated with a
    key derived from `secret` (text or bytes, 16 bytes or more);
    `ferrymail.tracking.verify(token, secret)` reads it back. A bad value raises
    `ConfigError` naming the field."""

    base_url: str
    secret: str | bytes
    opens: bool = True
    clicks: bool = True

    def __post_init__(self) -> None:
        _check_type("tracking.base_url", self.base_url, str)
        _check_secret("tracking.secret", self.secret)
        _check_type("tracking.opens", self.opens, bool)
        _check_type("tracking.clicks", self.clicks, bool)


class Unsubscribe(msgspec.Struct, frozen=True):
    """List-Unsubscribe (RFC 2369) and one-click unsubscribe (RFC 8058).

    `url` (https only, as RFC 8058 requires) is joined with an opaque per-recipient
    token, as `Tracking.base_url` is, and is available to the body as
    `{{ unsubscribe_url }}`; `mailto` receives unsubscribe mails whose subject carries
    the token. `secret` (text or bytes, 16 bytes or more) keys the tokens; without it
    the tracking secret is used. ferrymail also writes a `List-Id` (RFC 2919) unless
    the campaign's headers have one.
    """

    url: str | None = None
    mailto: str | None = None
    secret: str | bytes | None = None

    def __post_init__(self) -> None:
        _check_type("unsubscribe.url", self.url, str, optional=True)
        _check_type("unsubscribe.mailto", self.mailto, str, optional=True)
        if self.secret is not None:
            _check_secret("unsubscribe.secret", self.secret)


class Verp(msgspec.Struct, frozen=True):
    """VERP (variable envelope return path) with a secret of its own (text or bytes, 16
    bytes or more): each message's envelope sender carries a token naming its
    recipient, sealed with a key derived from `secret` (see `Campaign`'s `verp`).
    `ferrymail.verp.open_token(token, [secret])` reads it back."""

    secret: str | bytes

    def __post_init__(self) -> None:
        _check_secret("verp.secret", self.secret)


def _check_type(field: str, value: object, kind: type, optional: bool = False) -> None:
    if (optional and value is None) or isinstance(value, kind):
        return
    what = "text" if kind is str else "true or false" if kind is bool else kind.__name__
    raise ConfigError(
        f"{field}: must be {what}{' (or absent)' if optional else ''}, "
        f"not {type(value).__name__} {value!r:.40}",
        field,
    )


def _check_secret(field: str, secret: object) -> None:
    """A secret is text or bytes: anything else (`secret = 20` in TOML) would become a
    key anyone can guess, or fail far from where it was written."""
    if not isinstance(secret, str | bytes):
        raise ConfigError(
            f"{field}: a secret must be text or bytes, not {type(secret).__name__}", field
        )


class DkimKey(msgspec.Struct, frozen=True):
    """A DKIM signing key (RFC 6376): each message gets one DKIM-Signature per key.

    `private_key` is PEM text (or bytes): RSA of 2048 to 8192 bits in PKCS#1 or PKCS#8,
    or Ed25519 in PKCS#8 (RFC 8463). `algorithm` ("rsa-sha256" or "ed25519-sha256") is
    taken from the key when None. `headers` replaces the default list of signed headers,
    as given (list a name once more than it occurs to forbid adding one). By default
    From, To, Cc, Reply-To, Subject, Date, Message-ID, MIME-Version, Content-Type,
    Content-Transfer-Encoding, List-Unsubscribe and List-Unsubscribe-Post are signed
    once more than they occur (RFC 6376 §8.15), and Sender, List-Id, Feedback-ID and
    BIMI-Selector when present. `canonicalization` is "relaxed/relaxed" (default) or
    "simple/simple".

    `domain` (d=) must be aligned with the From domain (DMARC relaxed alignment: the
    same organisational domain by the Public Suffix List), or the campaign raises
    `ConfigError`. `aligned=False` marks an extra signature that need not be (an ESP's
    own domain beside the customer's), allowed only beside an aligned key. A key that
    cannot be used raises `ConfigError` naming domain and selector when the campaign is
    built.
    """

    domain: str
    selector: str
    private_key: str | bytes
    algorithm: str | None = None
    headers: Sequence[str] | None = None
    canonicalization: str = "relaxed/relaxed"
    aligned: bool = True


class DkimKeys(msgspec.Struct, frozen=True):
    """A key set, for a campaign whose From domain varies per recipient (a template such
    as `news@{{ brand_domain }}`, a multi-tenant ESP signing for each customer's domain):
    `keys` maps a From domain to the key that signs its messages. Each message is
    signed with the key given for its From domain, or else for the nearest domain above
    it up to its organisational domain (a key for example.com signs news.example.com).
    Each key's domain must be aligned with the domain it is given for. A recipient whose
    From domain has no key fails alone (`RenderError`), rather than going out unsigned
    where its domain's DMARC policy may reject it."""

    keys: Mapping[str, DkimKey]


def _secret_bytes(secret: str | bytes) -> bytes:
    return secret.encode() if isinstance(secret, str) else secret


class Campaign:
    """One message template for many recipients.

    `sender` is the envelope sender (MAIL FROM); `from_` the From header. `subject`,
    `html`, `text`, `from_`, `reply_to` and header values are Jinja templates, compiled
    here: a syntax error raises `TemplateError` naming the part, line and column, and a
    bad setting raises `ConfigError` naming it.

    `verp` (VERP, variable envelope return path): with `verp=True` (keyed with the
    secret of `tracking`, else of `unsubscribe`; `ConfigError` naming `verp` when the
    campaign has neither) or `verp=Verp(secret=...)`, the engine sends each message
    with the envelope sender `local+TOKEN@domain` for a `sender` of `local@domain`
    (the Return-Path, where late bounces go). TOKEN is 39 lower-case base32 characters
    naming the recipient's spool row, encrypted and authenticated: it tells a reader
    nothing and cannot be forged; `ferrymail.verp.open_token` reads it back. The
    sender's local part must have no `+` and at most 24 octets (a local part is at
    most 64). The domain stays the sender's, so SPF and DMARC alignment are unchanged,
    and the From header is never touched. Without a spool there is no row to name:
    `ferrymail.render` previews and a `Transport` used directly send the plain sender.

    `pool`: the egress pool of the engine's shaping file (`[pool.NAME]`) the campaign
    is sent from; None: the default pool (README, "Traffic shaping").
    """

    __slots__ = (
        "_inner",
        "dkim",
        "from_",
        "headers",
        "html",
        "id",
        "pool",
        "reply_to",
        "sender",
        "spec",
        "subject",
        "text",
        "tracking",
        "unsubscribe",
        "verp",
    )

    def __init__(
        self,
        id: str | int,
        sender: str,
        from_: str,
        subject: str,
        html: str | None = None,
        text: str | None = None,
        reply_to: str | None = None,
        headers: Mapping[str, str] | None = None,
        tracking: Tracking | None = None,
        unsubscribe: Unsubscribe | None = None,
        dkim: DkimKey | DkimKeys | Sequence[DkimKey | DkimKeys] = (),
        verp: bool | Verp = False,
        pool: str | None = None,
    ) -> None:
        self.id = str(id)
        self.sender = sender
        self.from_ = from_
        self.subject = subject
        self.html = html
        self.text = text
        self.reply_to = reply_to
        self.headers = dict(headers or {})
        self.tracking = tracking
        self.unsubscribe = unsubscribe
        self.dkim = (dkim,) if isinstance(dkim, DkimKey | DkimKeys) else tuple(dkim)
        self.verp = verp
        _check_type("pool", pool, str, optional=True)
        self.pool = pool
        self.spec = CampaignSpec(
            id=self.id,
            sender=sender,
            from_=from_,
            subject=subject,
            html=html,
            text=text,
            reply_to=reply_to,
            headers=list(self.headers.items()),
            tracking=_tracking_spec(tracking),
            unsubscribe=_unsubscribe_spec(unsubscribe, tracking),
            dkim=_dkim_specs(self.dkim),
            verp=_verp_spec(verp, tracking, unsubscribe),
            pool=pool,
        )
        self._inner = _core.compile_campaign(_encoder.encode(self.spec))

    def __repr__(self) -> str:
        return f"Campaign(id={self.id!r}, sender={self.sender!r}, subject={self.subject!r})"


def _tracking_spec(tracking: Tracking | None) -> TrackingSpec | None:
    if tracking is None:
        return None
    return TrackingSpec(
        base_url=tracking.base_url,
        secret=_secret_bytes(tracking.secret),
        opens=tracking.opens,
        clicks=tracking.clicks,
    )


def _unsubscribe_spec(
    unsubscribe: Unsubscribe | None, tracking: Tracking | None
) -> UnsubscribeSpec | None:
    if unsubscribe is None:
        return None
    secret = unsubscribe.secret
    if secret is None and tracking is not None:
        secret = tracking.secret
    return UnsubscribeSpec(
        url=unsubscribe.url,
        mailto=unsubscribe.mailto,
        secret=_secret_bytes(secret) if secret is not None else b"",
    )


def _verp_spec(
    verp: bool | Verp, tracking: Tracking | None, unsubscribe: Unsubscribe | None
) -> VerpSpec | None:
    """The wire's VERP settings: `verp=True` takes the campaign's existing secret."""
    if isinstance(verp, Verp):
        return VerpSpec(secret=_secret_bytes(verp.secret))
    if verp is False:
        return None
    if verp is not True:
        raise ConfigError(
            f"verp: must be true, false or Verp(secret=...), not {type(verp).__name__} "
            f"{verp!r:.40}",
            "verp",
        )
    if tracking is not None:
        return VerpSpec(secret=_secret_bytes(tracking.secret))
    if unsubscribe is not None and unsubscribe.secret is not None:
        return VerpSpec(secret=_secret_bytes(unsubscribe.secret))
    raise ConfigError(
        "verp: verp=True keys the envelope tokens with the tracking or unsubscribe "
        "secret, and this campaign has neither: give verp=Verp(secret=...)",
        "verp",
    )


def _dkim_specs(keys: Sequence[DkimKey | DkimKeys]) -> list[DkimKeySpec]:
    """The wire's flat list: a key set's keys carry the From domain they are for."""
    specs: list[DkimKeySpec] = []
    sets = 0
    for i, key in enumerate(keys):
        if isinstance(key, DkimKey):
            specs.append(_dkim_spec(key))
        elif isinstance(key, DkimKeys):
            sets += 1
            if sets > 1:
                raise ConfigError("give one key set (DkimKeys), not several", f"dkim[{i}]")
            if not key.keys:
                raise ConfigError("the key set (DkimKeys) is empty", f"dkim[{i}]")
            for domain, k in key.keys.items():
                if not isinstance(domain, str) or not isinstance(k, DkimKey):
                    raise ConfigError(
                        f"a key set maps From domains to DkimKey, got {domain!r}: {k!r}",
                        f"dkim[{i}]",
                    )
                specs.append(_dkim_spec(k, for_domain=domain))
        else:
            raise ConfigError(f"expected DkimKey or DkimKeys, got {key!r}", f"dkim[{i}]")
    return specs


def _dkim_spec(key: DkimKey, for_domain: str | None = None) -> DkimKeySpec:
    if not isinstance(key.aligned, bool):
        raise ConfigError(
            f"aligned must be true or false, got {key.aligned!r}",
            f"dkim ({key.domain}/{key.selector})",
        )
    pem = key.private_key
    return DkimKeySpec(
        domain=key.domain,
        selector=key.selector,
        private_key=pem.decode("ascii", "replace") if isinstance(pem, bytes) else pem,
        algorithm=key.algorithm,
        headers=list(key.headers) if key.headers is not None else None,
        canonicalization=key.canonicalization,
        aligned=key.aligned,
        for_domain=for_domain,
    )
