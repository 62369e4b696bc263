"""Bounce classification: the category of a reply (or of a failure without one) a recipient met.

`BounceClassifier.classify(code, enhanced, text, kind)` names one of `CATEGORIES` for an
`Outcome`'s deciding reply (or for what decided it without one: its `kind`). It
describes why; the caller decides what to do: the engine suppresses an address after a
*permanent* outcome in `HARD_CATEGORIES`, and uses the category of a *transient* one (a
deferral) only to report and to shape traffic, so a 4xx "user unknown" is classified
bad-mailbox but suppresses nothing.

Rules are tried in order and the first that matches decides; nothing matching is "other".
User rules come first, then the built-in rules (`BUILTIN_RULES`) in these tiers:

1. Outcomes that no reply decided, by their kind (`OutcomeKind`), never by our own
   texts: "refused", "unreachable", "timeout" and "lost" -> routing (the receiver could
   not be reached or dropped us: try another MX or later); "protocol" -> protocol;
   "tls" -> policy-related (a TLS policy could not be met); "render", "internal",
   "interrupted" and "cancelled" -> other. "dns" and "local" go on to the codes they
   carry (a null MX's 556 5.1.10 is bad-domain, an over-SIZE 552 5.3.4 content-related).
2. Known replies whose enhanced code says something else: Microsoft's
   "5.4.1 Recipient address rejected: Access denied" (directory-based edge blocking) is
   bad-mailbox, not routing; ferrymail's own 5.4.4 "no MX host of ... has an address"
   is routing even when it quotes the hosts' NXDOMAINs.
3. Reply text, which wins over the codes: receivers misuse enhanced codes (a 5.7.1
   "user unknown", a 5.1.1 "blocked", Gmail's 4.2.1 for a rate limit), but their words
   are meant for people and say what happened. Words for causes that keep the address
   come before words for the ones that suppress it, so that a reply mentioning both
   (a 5.1.1 that says "blocked") keeps the address: suppressing a valid address loses
   it for good, while keeping a dead one costs one more bounce. Only the weak words
   come after them ("expired", "loop", "syntax error" also occur in replies about a
   mailbox: "account expired", "bad recipient address syntax"). In order:
   sender authentication (DMARC, SPF, DKIM) -> policy-related; malware and attachments
   -> content-related; spam, block lists, reputation -> spam-related; other content and
   message size -> content-related; greylisting, rate limits, "not authorized", sender
   and client checks, "policy", TLS -> policy-related; quota; inactive-mailbox;
   bad-domain; bad-mailbox; message-expired; routing (no route, loops, relaying
   denied, connection failures); protocol.
4. Enhanced status codes (RFC 3463, RFC 7372, RFC 7505), most specific first, the same
   for class 4 and class 5.
5. Bare reply codes: 552 and 452 (storage, RFC 5321 §4.2.2) -> quota; 556 (RFC 7504
   domain does not accept mail) -> bad-domain; 521 (RFC 7504 host does not accept mail,
   which may be one MX of several) -> routing. 550 and 554 alone say too little.

Decisions: DMARC, SPF and DKIM failures are policy-related, not spam-related: the fix is
the sender's DNS or signing, not its reputation. Rate limits (421 4.7.0 "try again
later", "too many connections") are policy-related, a volume limit the receiver sets;
they are spam-related only when the text blames spam, complaints or reputation (Gmail's
4.7.28, Yahoo's TSS04). Sender-side refusals (5.1.7, 5.1.8, "Sender address rejected")
are policy-related: they say nothing about the recipient. "Relay access denied" is
routing: the host is not (or no longer) the domain's mail server.

Before matching, mail addresses in the text are replaced by "<>", so that a recipient
named spam@ or a domain like blocked.example does not decide the category.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

import msgspec

from .wire import OutcomeKind

CATEGORIES: tuple[str, ...] = (
    "bad-mailbox",
    "bad-domain",
    "inactive-mailbox",
    "quota",
    "spam-related",
    "policy-related",
    "content-related",
    "routing",
    "protocol",
    "message-expired",
    "other",
)

# The engine suppresses an address after a permanent bounce in one of these: the mailbox
# or domain does not exist or no longer takes mail, so sending again only hurts the
# sender's reputation.
HARD_CATEGORIES: frozenset[str] = frozenset({"bad-mailbox", "bad-domain", "inactive-mailbox"})

_ENHANCED_PREFIX = re.compile(r"[245](?:\.[0-9]{1,3}){0,2}")
_ENHANCED = re.compile(r"\s*([245])\.([0-9]{1,3})\.([0-9]{1,3})\s*")
# local@domain, with its angle brackets when it has them.
_ADDRESS = re.compile(r"<?[^\s<>()\[\]@,;:\"]+@[^\s<>()\[\],;:\"]+>?")


@functools.cache
def _compile(pattern: str) -> re.Pattern[str]:
    """A rule's text pattern, compiled once however many rules and classifiers use it."""
    return re.compile(pattern, re.IGNORECASE)


# The kinds a rule may name: OutcomeKind's values (wire.py).
_KINDS = frozenset(k.value for k in OutcomeKind)


def _enhanced_parts(enhanced: str) -> tuple[int, ...]:
    return tuple(int(part) for part in enhanced.split("."))


class BounceRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One classification rule: it matches a reply when every condition it sets matches.

    `enhanced` is an enhanced status code prefix by whole parts: "5.1.1" matches 5.1.1
    only, "5.7" matches every 5.7.x, "4" every class-4 code. `code` is a reply code (550).
    `kind` is an `OutcomeKind` value ("reply", "timeout", "tls", ...).
    `text` is a regular expression searched case-insensitively in the reply text (after
    mail addresses in it are replaced by "<>"). At least one condition must be set;
    a bad category, prefix, code or expression raises ValueError naming it.
    """

    category: str
    enhanced: str | None = None
    code: int | None = None
    text: str | None = None
    kind: str | None = None

    def __post_init__(self) -> None:
        if self.category not in CATEGORIES:
            raise ValueError(
                f"BounceRule.category {self.category!r} is not one of {', '.join(CATEGORIES)}"
            )
        if self.enhanced is None and self.code is None and self.text is None and not self.kind:
            raise ValueError("BounceRule needs at least one of enhanced, code, text or kind")
        if self.kind is not None and self.kind not in _KINDS:
            raise ValueError(
                f"BounceRule.kind {self.kind!r} is not one of {', '.join(sorted(_KINDS))}"
            )
        if self.enhanced is not None and (
            not isinstance(self.enhanced, str) or not _ENHANCED_PREFIX.fullmatch(self.enhanced)
        ):
            raise ValueError(
                f"BounceRule.enhanced {self.enhanced!r} is not an enhanced status code "
                'prefix such as "5.1.1", "5.7" or "4"'
            )
        if self.code is not None and (type(self.code) is not int or not 200 <= self.code <= 599):
            raise ValueError(f"BounceRule.code {self.code!r} is not a reply code (200 to 599)")
        if self.text is not None:
            if not isinstance(self.text, str):
                raise ValueError(f"BounceRule.text {self.text!r} is not a string")
            try:
                _compile(self.text)
            except re.error as e:
                raise ValueError(
                    f"BounceRule.text {self.text!r} is not a regular expression: {e}"
                ) from None


class _Matcher:
    """A rule prepared for matching: its prefix split into numbers, its pattern compiled."""

    __slots__ = ("category", "code", "enhanced", "kind", "pattern")

    def __init__(self, rule: BounceRule) -> None:
        self.category = rule.category
        self.code = rule.code
        self.kind = rule.kind
        self.enhanced = _enhanced_parts(rule.enhanced) if rule.enhanced is not None else None
        self.pattern = _compile(rule.text) if rule.text is not None else None

    def matches(
        self, code: int | None, enhanced: tuple[int, ...] | None, text: str, kind: str | None
    ) -> bool:
        if self.kind is not None and kind != self.kind:
            return False
        if self.code is not None and code != self.code:
            return False
        if self.enhanced is not None and (
            enhanced is None or enhanced[: len(self.enhanced)] != self.enhanced
        ):
            return False
        return self.pattern is None or self.pattern.search(text) is not None


class BounceClassifier:
    """Classifies replies with `rules` first, then (unless `builtin` is False) the built-in
    rules; see the module docstring for their order. Build one and reuse it: rules are
    prepared once, and `classify` is safe to call from any thread."""

    __slots__ = ("_matchers", "rules")

    def __init__(self, rules: Iterable[BounceRule] = (), *, builtin: bool = True) -> None:
        self.rules: tuple[BounceRule, ...] = tuple(rules) + (BUILTIN_RULES if builtin else ())
        for rule in self.rules:
            if not isinstance(rule, BounceRule):
                raise TypeError(f"BounceClassifier rules must be BounceRule, not {rule!r}")
        self._matchers = tuple(_Matcher(rule) for rule in self.rules)

    def classify(
        self, code: int | None, enhanced: str | None, text: str, kind: str | None = None
    ) -> str:
        """The category of a reply: its code (None without a reply), its enhanced status
        code (None when it had none), its text and the outcome's kind (None: a reply);
        "other" when no rule matches."""
        parts = None
        if enhanced is not None and (m := _ENHANCED.fullmatch(enhanced)):
            parts = (int(m[1]), int(m[2]), int(m[3]))
        text = _ADDRESS.sub("<>", text)
        for matcher in self._matchers:
            if matcher.matches(code, parts, text, kind):
                return matcher.category
        return "other"

    def __repr__(self) -> str:
        return f"BounceClassifier({len(self.rules)} rules)"


def _text(category: str, *patterns: str) -> BounceRule:
    return BounceRule(category, text="|".join(patterns))


def _status(category: str, *codes: str) -> tuple[BounceRule, ...]:
    """Rules for enhanced codes given without their class ("1.1"): the same for 4 and 5."""
    return tuple(BounceRule(category, enhanced=f"{c}.{code}") for code in codes for c in "54")


# Tier 3, reply text. Kept in the order the module docstring gives, which is the order
# they are tried in.
_AUTHENTICATION = _text(
    "policy-related",
    r"\bdmarc\b",
    r"\bspf\b",
    r"\bdkim\b",
    r"\bdomainkeys\b",
    r"\bsender policy framework\b",
    r"\bunauthenticated\b",
)
_MALWARE = _text(
    "content-related",
    r"\bvirus",
    r"\bmalware\b",
    r"\binfected\b",
    r"\battachments?\b",
    r"\bexecutables?\b",
)
_SPAM = _text(
    "spam-related",
    r"\bspam(?:my|mer|mers|ming|s)?\b",
    r"spamhaus|spamcop|spamassassin|barracudacentral|\bsorbs\b|\bdnsbl\b|\b(?:open)?rbl\b",
    r"\b(?:black|block|deny|ban)[ -]?list",
    # "listed at zen.spamhaus.org", but not Domino's "User not listed in ... Directory".
    r"(?<!not )(?<!n't )\blisted (?:on|in|at|by)\b",
    r"\bblocked\b",
    r"\bbanned\b",
    r"\breputation\b",
    r"\bunsolicited\b|\bjunk ?mail\b|\bbulk (?:e-?)?mail\b|\bU\.?[BC]\.?E\b",
    r"\bcomplaints?\b",
    r"\bphish",
)
_CONTENT = _text(
    "content-related",
    r"\bcontent\b",
    r"\bmessage (?:size|length)\b",
    r"\bmessage (?:is )?too (?:big|large|long)\b",
    r"\bmaximum message size\b",
)
_POLICY = _text(
    "policy-related",
    r"\bgr[ae]y[ -]?list",
    r"\brate[ -]?limit",
    r"\btoo many (?:messages|mails?|e-?mails|connections|sessions|requests|concurrent)\b",
    r"\bthrottl",
    r"\breceiving mail (?:too quickly|at a rate)\b",
    r"\b(?:hourly|daily)\b[^.;]{0,40}\b(?:limit|quota)\b",
    r"\bnot ?authori[sz]ed\b",
    r"\bsender address rejected\b|\b(?:unknown|invalid|bad) sender\b",
    r"\bclient host rejected\b|\bhelo command rejected\b|\breverse dns\b|\bptr record\b",
    r"\bpolic(?:y|ies)\b",
    r"\b(?:start)?tls\b|\bencryption\b",
)
_QUOTA = _text(
    "quota",
    r"quota",
    r"\bmailbox (?:is )?full\b|\bfull mailbox\b|\bmailbox size limit\b",
    r"\bstorage\b",
    r"\btoo much mail\b",
)
_INACTIVE = _text(
    "inactive-mailbox",
    r"\b(?:account|mailbox|user)\b[^.;]{0,40}?"
    r"\b(?:disabled|inactive|deactivated|suspended|discontinued|expired|closed|terminated)\b",
    r"\binactive\b",
    r"\bhas been disabled\b",
    r"\bno longer (?:active|in use|valid|available|exists)\b",
)
_BAD_DOMAIN = _text(
    "bad-domain",
    r"\bnull mx\b",
    r"\bnxdomain\b",
    r"\bno such domain\b|\bunknown domain\b|\bnot a (?:valid )?domain\b",
    r"\bdomain (?:name )?(?:not found|does not exist|doesn't exist|is invalid)\b",
    r"\bhost or domain name not found\b",
    r"\bdomain does not accept mail\b",
)
_BAD_MAILBOX = _text(
    "bad-mailbox",
    r"\b(?:user|mailbox|recipient|addressee|account|address|local part)s?\b[^.;]{0,40}?"
    r"\b(?:unknown|not found|not exist|does not exist|doesn't exist|does not have|"
    r"doesn't have|invalid|not (?:a )?valid|unavailable|not listed)\b",
    r"\bunknown (?:user|recipient|mailbox|address|local part)\b",
    r"\bno such (?:user|mailbox|recipient|account|address|person)\b",
    r"\binvalid (?:recipient|mailbox|user|address)\b",
    r"\bnot a valid (?:recipient|mailbox|user|address)\b",
    r"\bbad (?:destination |recipient )?(?:mailbox )?address\b",
    r"\bno mailbox here\b",
    r"\bnot our customer\b",
    r"\brecip(?:ient)?notfound\b",
)
_EXPIRED = _text(
    "message-expired",
    r"\b(?:message|mail|delivery)\b[^.;]{0,20}?\bexpired\b",
    r"\bexpired (?:in|on) (?:the )?queue\b|\bqueue lifetime\b|\btoo long in (?:the )?queue\b",
    r"\bretry timeout exceeded\b",
)
_ROUTING = _text(
    "routing",
    r"\bno route\b|\bunroute?able\b",
    r"\bloop(?:s|ing|ed)?\b|\btoo many hops\b|\bhop count\b",
    r"\brelay(?:ing)? (?:access )?(?:denied|not permitted|prohibited|disallowed)\b",
    r"\b(?:not permitted to|unable to|do not|don't|cannot|can't) relay\b|\brcpthosts\b",
    r"\bconnection (?:refused|reset|timed out)\b|\b(?:host|network) (?:is )?unreachable\b",
)
_PROTOCOL = _text(
    "protocol",
    r"\bsyntax error\b",
    r"\bcommand (?:not )?(?:recogni[sz]ed|implemented)\b|\bunrecogni[sz]ed command\b",
    r"\bbad sequence of commands\b",
    r"\bline too long\b|\bbare (?:lf|cr|linefeed)\b",
)

BUILTIN_RULES: tuple[BounceRule, ...] = (
    # 1. Outcomes no reply decided, by their kind.
    *(BounceRule("routing", kind=k) for k in ("refused", "unreachable", "timeout", "lost")),
    BounceRule("protocol", kind="protocol"),
    BounceRule("policy-related", kind="tls"),
    *(BounceRule("other", kind=k) for k in ("render", "internal", "interrupted", "cancelled")),
    # 2. Known replies whose enhanced code says something else.
    # Not its "5.4.1 Relay Access Denied", which is routing.
    BounceRule(
        "bad-mailbox", enhanced="5.4.1", text=r"\brecipient address rejected: access denied\b"
    ),
    # ferrymail's DNS step (dns.py) says 5.4.4 when no MX host of a domain has an
    # address; the hosts' NXDOMAINs in its text are about them, not the domain.
    BounceRule("routing", kind="dns", enhanced="5.4.4"),
    # 3. Reply text.
    _AUTHENTICATION,
    _MALWARE,
    _SPAM,
    _CONTENT,
    _POLICY,
    _QUOTA,
    _INACTIVE,
    _BAD_DOMAIN,
    _BAD_MAILBOX,
    _EXPIRED,
    _ROUTING,
    _PROTOCOL,
    # 4. Enhanced status codes, specific before general.
    *_status("bad-mailbox", "1.1", "1.3"),
    *_status("bad-domain", "1.2", "1.10"),
    *_status("inactive-mailbox", "1.6", "2.1"),
    *_status("policy-related", "1.7", "1.8"),
    *_status("quota", "2.2", "3.1"),
    *_status("content-related", "2.3", "3.4"),
    *_status("routing", "3.2"),
    *_status("message-expired", "4.7"),
    *_status("routing", "4"),
    *_status("protocol", "5"),
    *_status("content-related", "6"),
    *_status("spam-related", "7.28"),
    *_status("policy-related", "7"),
    # 5. Bare reply codes.
    BounceRule("quota", code=552),
    BounceRule("quota", code=452),
    BounceRule("bad-domain", code=556),
    BounceRule("routing", code=521),
)
