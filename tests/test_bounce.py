"""Bounce classification: real receivers' replies, misused codes, user rules and rule checks."""

from __future__ import annotations

import msgspec
import pytest
from ferrymail.bounce import (
    BUILTIN_RULES,
    CATEGORIES,
    HARD_CATEGORIES,
    BounceClassifier,
    BounceRule,
)

CLASSIFIER = BounceClassifier()

# (code, enhanced, text, category). Texts are as the Outcome carries them: multiline
# replies joined with spaces, the enhanced code taken off each line (rust/src/smtp/reply.rs).
REPLIES: list[tuple[int | None, str | None, str, str]] = [
    # bad-mailbox
    (
        550,
        "5.1.1",
        "The email account that you tried to reach does not exist. Please try "
        "double-checking the recipient's email address for typos or unnecessary spaces. "
        "For more information, go to https://support.google.com/mail/?p=NoSuchUser "
        "a1si123456qkb.12 - gsmtp",
        "bad-mailbox",
    ),
    (550, "5.1.1", "<bob@example.com>: User unknown", "bad-mailbox"),
    (
        550,
        "5.1.1",
        "<bob@example.com>: Recipient address rejected: User unknown in virtual mailbox table",
        "bad-mailbox",
    ),
    (
        550,
        "5.4.1",
        "Recipient address rejected: Access denied. AS(201806281) "
        "[DB5EUR03FT012.eop-EUR03.prod.protection.outlook.com 2024-05-01T10:00:00.000Z]",
        "bad-mailbox",
    ),
    (
        550,
        "5.5.0",
        "Requested action not taken: mailbox unavailable (S2017062302). [AM6EUR05FT004]",
        "bad-mailbox",
    ),
    (
        554,
        None,
        "delivery error: dd This user doesn't have a yahoo.com account (bob@yahoo.com) "
        "[0] - mta1234.mail.ne1.yahoo.com",
        "bad-mailbox",
    ),
    (
        550,
        "5.1.10",
        "RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
        "bad-mailbox",
    ),
    (550, "5.1.1", "Not our Customer", "bad-mailbox"),
    (550, None, "sorry, no mailbox here by that name. (#5.1.1)", "bad-mailbox"),
    (550, "5.1.1", "User not listed in public Name & Address Book", "bad-mailbox"),
    (501, "5.1.3", "Bad recipient address syntax", "bad-mailbox"),
    (
        550,
        None,
        "Invalid Recipient - https://community.mimecast.com/docs/DOC-1369#550",
        "bad-mailbox",
    ),
    (550, "5.1.1", "Mailbox does not exist", "bad-mailbox"),
    (550, None, "<bob@comcast.net> is not a valid mailbox", "bad-mailbox"),
    (
        550,
        "5.1.1",
        "<bob@example.com>: Recipient address rejected: User unknown in relay recipient table",
        "bad-mailbox",
    ),
    # A code that says policy, a text that says the user does not exist.
    (550, "5.7.1", "No such user here", "bad-mailbox"),
    (554, "5.7.1", "<bob@example.com>: user unknown", "bad-mailbox"),
    # A transient "user unknown" is still bad-mailbox; the engine suppresses only permanent ones.
    (
        450,
        "4.1.1",
        "<bob@example.com>: Recipient address rejected: unverified address: "
        "host mx.example.com[192.0.2.1] said: 550 5.1.1 User unknown",
        "bad-mailbox",
    ),
    # bad-domain, including what ferrymail's DNS step reports
    (556, "5.1.10", "Recipient address has null MX", "bad-domain"),
    (550, "5.1.2", "example.invalid: NXDOMAIN (no such domain)", "bad-domain"),
    (
        450,
        "4.1.2",
        "<bob@nowhere.example>: Recipient address rejected: Domain not found",
        "bad-domain",
    ),
    (556, None, "Domain does not accept mail", "bad-domain"),
    (550, "5.1.2", "Host unknown", "bad-domain"),
    # The shapes of ferrymail's DNS results (python/ferrymail/dns.py).
    (
        556,
        "5.1.10",
        "example.com publishes a null MX (RFC 7505): it accepts no mail",
        "bad-domain",
    ),
    (550, "5.1.2", "nowhere.example does not exist (NXDOMAIN)", "bad-domain"),
    (
        550,
        "5.1.2",
        "example.com has no MX record and no address (NXDOMAIN): no mail host",
        "bad-domain",
    ),
    (553, "5.1.3", "'exa mple.com' is not a domain: label has a space", "bad-domain"),
    (550, "5.4.310", "DNS domain does not exist [Message=InfoDomainNonexistent]", "bad-domain"),
    # inactive-mailbox
    (
        550,
        "5.2.1",
        "The email account that you tried to reach is disabled. Learn more at "
        "https://support.google.com/mail/?p=DisabledUser z1si1 - gsmtp",
        "inactive-mailbox",
    ),
    (
        554,
        None,
        "delivery error: dd This account has been disabled or discontinued [#102]. - mta",
        "inactive-mailbox",
    ),
    (550, "5.1.1", "Mailbox inactive: account expired", "inactive-mailbox"),
    (550, "5.1.6", "Recipient has moved", "inactive-mailbox"),
    # quota, class 5 and class 4
    (
        552,
        "5.2.2",
        "The email account that you tried to reach is over quota. Please direct the "
        "recipient to https://support.google.com/mail/?p=OverQuotaPerm",
        "quota",
    ),
    (452, "4.2.2", "The email account that you tried to reach is over quota.", "quota"),
    (552, None, "Requested mail action aborted: exceeded storage allocation", "quota"),
    (550, "5.7.1", "Mailbox full", "quota"),
    (452, "4.3.1", "Insufficient system storage", "quota"),
    # spam-related
    (
        554,
        "5.7.1",
        "Service unavailable; Client host [192.0.2.7] blocked using zen.spamhaus.org; "
        "https://www.spamhaus.org/query/ip/192.0.2.7",
        "spam-related",
    ),
    (
        550,
        "5.7.1",
        "Our system has detected that this message is likely unsolicited mail. To reduce "
        "the amount of spam sent to Gmail, this message has been blocked. Please visit "
        "https://support.google.com/mail/?p=UnsolicitedMessageError for more information.",
        "spam-related",
    ),
    (
        550,
        "5.7.1",
        "Unfortunately, messages from [192.0.2.7] weren't sent. Please contact your "
        "Internet service provider since part of their network is on our block list (S3150).",
        "spam-related",
    ),
    (
        550,
        "5.7.606",
        "Access denied, banned sending IP [192.0.2.7]. To request removal from this list "
        "please visit https://sender.office.com/",
        "spam-related",
    ),
    (
        421,
        "4.7.0",
        "[TSS04] Messages from 192.0.2.7 temporarily deferred due to unexpected volume or "
        "user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes",
        "spam-related",
    ),
    (
        421,
        "4.7.28",
        "Our system has detected an unusual rate of unsolicited mail originating from your "
        "IP address. To protect our users from spam, mail sent from your IP address has "
        "been temporarily rate limited.",
        "spam-related",
    ),
    (554, None, "Blocked - see https://ipcheck.proofpoint.com/?ip=192.0.2.7", "spam-related"),
    (550, None, "Your IP 192.0.2.7 is listed at bl.spamcop.net", "spam-related"),
    (550, "5.7.1", "Sender IP has a poor reputation", "spam-related"),
    # Spam words win over content words: the filter judged the message spam.
    (550, "5.7.1", "Message rejected as spam by Content Filtering.", "spam-related"),
    # A code that says user unknown, a text that says the sender is blocked.
    (550, "5.1.1", "<bob@example.com>: blocked by recipient's filter", "spam-related"),
    (550, "5.7.28", "Mail flood detected", "spam-related"),
    # policy-related: authentication, rate limits, greylisting, generic 5.7.x
    (
        550,
        "5.7.26",
        "Unauthenticated email from example.com is not accepted due to domain's DMARC "
        "policy. Please contact the administrator of example.com domain.",
        "policy-related",
    ),
    (
        550,
        "5.7.26",
        "This mail has been blocked because the sender is unauthenticated. Gmail requires "
        "all senders to authenticate with either SPF or DKIM.",
        "policy-related",
    ),
    (
        550,
        "5.7.509",
        "Access denied, sending domain [EXAMPLE.COM] does not pass DMARC verification and "
        "has a DMARC policy of reject.",
        "policy-related",
    ),
    (421, "4.7.0", "Try again later, closing connection. (EHLO) x1si2 - gsmtp", "policy-related"),
    (421, None, "Too many concurrent SMTP connections; please try again later.", "policy-related"),
    (
        450,
        "4.2.1",
        "The user you are trying to contact is receiving mail at a rate that prevents "
        "additional messages from being delivered.",
        "policy-related",
    ),
    (
        451,
        "4.7.1",
        "<bob@example.com>: Recipient address rejected: Greylisted, see "
        "http://postgrey.schweikert.ch/help/example.com.html",
        "policy-related",
    ),
    (
        450,
        "4.7.1",
        "Client host rejected: cannot find your hostname, [192.0.2.7]",
        "policy-related",
    ),
    (
        550,
        "5.7.1",
        "RESOLVER.RST.NotAuthorized; not authorized to send to this recipient",
        "policy-related",
    ),
    # The sender's domain, not the recipient's: no bad-domain, no suppression.
    (
        550,
        "5.1.8",
        "<news@example.com>: Sender address rejected: Domain not found",
        "policy-related",
    ),
    (
        554,
        "5.7.1",
        "<bob@example.com>: Recipient address rejected: Access denied",
        "policy-related",
    ),
    (530, "5.7.0", "Must issue a STARTTLS command first", "policy-related"),
    (554, "5.7.9", "Message not accepted for policy reasons.", "policy-related"),
    # content-related
    (
        552,
        "5.7.0",
        "This message was blocked because its content presents a potential security issue. "
        "Please visit https://support.google.com/mail/?p=BlockedMessage to review our "
        "message content and attachment content guidelines.",
        "content-related",
    ),
    (554, "5.7.1", "Message rejected: virus found (Eicar-Test-Signature)", "content-related"),
    (552, "5.3.4", "Message size exceeds fixed limit", "content-related"),
    (554, "5.6.0", "Message headers fail syntax check", "content-related"),
    (550, "5.6.7", "Non-ASCII addresses not permitted for that sender", "content-related"),
    # routing, including ferrymail's own failures (no code) and its DNS results
    (554, "5.4.4", "Unable to route: no MX and no address for example.com", "routing"),
    (554, "5.4.6", "Routing loop detected -- too many hops", "routing"),
    (554, "5.4.14", "Hop count exceeded - possible mail loop ATTR34", "routing"),
    # Microsoft's 5.4.1 that is not a missing recipient (see the AS(201806281) one above).
    (
        550,
        "5.4.1",
        "Relay Access Denied ATTR36 [DM6NAM12FT038.eop-nam12.prod.protection]",
        "routing",
    ),
    (554, "5.7.1", "<bob@olddomain.example>: Relay access denied", "routing"),
    (
        553,
        None,
        "sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)",
        "routing",
    ),
    (451, "4.4.1", "No answer from host", "routing"),
    # protocol
    (500, "5.5.1", "Invalid command", "protocol"),
    (503, "5.5.1", "Error: need MAIL command", "protocol"),
    (452, "4.5.3", "Too many recipients", "protocol"),
    (500, None, "Syntax error, command unrecognized", "protocol"),
    # message-expired
    (451, "4.4.7", "Message expired", "message-expired"),
    (554, None, "Delivery time expired, too long in queue", "message-expired"),
    # other: nothing says why
    (550, None, "Rejected", "other"),
    (554, "5.0.0", "Transaction failed", "other"),
]


# Outcomes ferrymail made itself, classified by their kind (and, for DNS and local
# decisions, the codes they carry), never by their texts: (code, enhanced, text, kind,
# category).
OWN: list[tuple[int | None, str | None, str, str, str]] = [
    (None, None, "connect failed: Connection refused (os error 111)", "refused", "routing"),
    (None, None, "connect failed: No route to host (os error 113)", "unreachable", "routing"),
    (None, None, "timed out after 300.0 s at banner", "timeout", "routing"),
    (None, None, "connection lost at dot: may have been delivered", "lost", "routing"),
    (None, None, "protocol error: reply line too long at rcpt", "protocol", "protocol"),
    (None, None, "the certificate is not valid for mx.example.com", "tls", "policy-related"),
    (None, None, "internal error: a worker panicked", "internal", "other"),
    (None, None, "unknown variable 'first_name'", "render", "other"),
    (None, None, "cut: the engine is stopping", "cancelled", "other"),
    (None, None, "the process stopped 2 times in a row", "interrupted", "other"),
    (
        550,
        "5.4.4",
        "no MX host of example.com has an address: mx1.example.com: NXDOMAIN; "
        "mx2.example.com: NXDOMAIN",
        "dns",
        "routing",
    ),
    (451, "4.4.3", "MX lookup for example.com failed: SERVFAIL", "dns", "routing"),
    (556, "5.1.10", "example.com has a null MX: it accepts no mail", "dns", "bad-domain"),
    (552, "5.3.4", "message too big for the server's SIZE limit", "local", "content-related"),
]


@pytest.mark.parametrize(("code", "enhanced", "text", "kind", "category"), OWN)
def test_own_outcomes_by_kind(
    code: int | None, enhanced: str | None, text: str, kind: str, category: str
) -> None:
    assert CLASSIFIER.classify(code, enhanced, text, kind) == category


@pytest.mark.parametrize(("code", "enhanced", "text", "category"), REPLIES)
def test_real_world_replies(
    code: int | None, enhanced: str | None, text: str, category: str
) -> None:
    assert CLASSIFIER.classify(code, enhanced, text) == category


def test_the_table_is_broad() -> None:
    # Every category but "other" is reached by some real reply, and by enough of them.
    assert len(REPLIES) >= 40
    assert {row[3] for row in REPLIES} == set(CATEGORIES)


def test_categories_and_hard_categories() -> None:
    assert sorted(HARD_CATEGORIES) == ["bad-domain", "bad-mailbox", "inactive-mailbox"]
    assert set(CATEGORIES) >= HARD_CATEGORIES
    assert len(CATEGORIES) == len(set(CATEGORIES)) == 11


def test_addresses_in_the_text_do_not_decide() -> None:
    # A recipient named spam@, at a domain named blocked, is still unknown.
    text = "<spam@blocked.example>: Recipient address rejected: User unknown"
    assert CLASSIFIER.classify(550, "5.1.1", text) == "bad-mailbox"
    # Without the address, the words would have made it spam-related.
    assert CLASSIFIER.classify(550, "5.1.1", "spam blocked: User unknown") == "spam-related"


@pytest.mark.parametrize(
    ("enhanced", "category"),
    [
        ("5.1.1", "bad-mailbox"),
        ("4.1.1", "bad-mailbox"),
        ("5.1.2", "bad-domain"),
        ("5.1.10", "bad-domain"),
        ("5.2.1", "inactive-mailbox"),
        ("5.2.2", "quota"),
        ("4.2.2", "quota"),
        ("5.2.3", "content-related"),
        ("5.4.4", "routing"),
        ("4.4.1", "routing"),
        ("4.4.7", "message-expired"),
        ("5.4.7", "message-expired"),
        ("5.5.2", "protocol"),
        ("5.6.1", "content-related"),
        ("5.7.1", "policy-related"),
        ("4.7.0", "policy-related"),
        ("5.7.28", "spam-related"),
        ("5.7.280", "policy-related"),  # a prefix matches by whole parts, not characters
        ("5.0.0", "other"),
        ("5.01.001", "bad-mailbox"),  # leading zeros are digits (RFC 3463)
        ("not a code", "other"),
    ],
)
def test_enhanced_codes_alone(enhanced: str, category: str) -> None:
    # A text with no telling words leaves the decision to the code.
    assert CLASSIFIER.classify(550, enhanced, "Rejected") == category


def test_bare_reply_codes() -> None:
    assert CLASSIFIER.classify(552, None, "") == "quota"
    assert CLASSIFIER.classify(452, None, "") == "quota"
    assert CLASSIFIER.classify(556, None, "") == "bad-domain"
    assert CLASSIFIER.classify(521, None, "") == "routing"
    assert CLASSIFIER.classify(550, None, "") == "other"
    assert CLASSIFIER.classify(None, None, "") == "other"


def test_our_own_texts_decide_nothing() -> None:
    # A server's reply that reads like one of our failures is judged as a reply...
    assert CLASSIFIER.classify(550, "5.7.1", "timed out after 30s", "reply") == "policy-related"
    # ...and an outcome of ours is judged by its kind, whatever its text says.
    assert CLASSIFIER.classify(None, None, "User unknown", "timeout") == "routing"


def test_rules_may_match_kinds() -> None:
    rules = [BounceRule("policy-related", kind="timeout")]
    assert BounceClassifier(rules).classify(None, None, "x", "timeout") == "policy-related"
    assert BounceClassifier(rules).classify(450, None, "x", "reply") != "policy-related"
    with pytest.raises(ValueError, match="kind 'late' is not one of"):
        BounceRule("routing", kind="late")


# ---- user rules ----


def test_user_rules_come_before_the_builtins() -> None:
    rules = [
        BounceRule("inactive-mailbox", text=r"\bdd This user doesn't have\b"),
        BounceRule("spam-related", enhanced="4.7.0", code=421),
    ]
    classifier = BounceClassifier(rules)
    yahoo = "delivery error: dd This user doesn't have a yahoo.com account"
    assert classifier.classify(554, None, yahoo) == "inactive-mailbox"
    assert CLASSIFIER.classify(554, None, yahoo) == "bad-mailbox"
    assert classifier.classify(421, "4.7.0", "Try again later") == "spam-related"
    # Every condition a rule sets must match: a 451 4.7.0 is not the rule's.
    assert classifier.classify(451, "4.7.0", "Try again later") == "policy-related"
    assert classifier.rules[:2] == tuple(rules)
    assert classifier.rules[2:] == BUILTIN_RULES


def test_user_rules_in_order_first_wins() -> None:
    classifier = BounceClassifier(
        [BounceRule("quota", enhanced="5.7"), BounceRule("content-related", enhanced="5.7.1")]
    )
    assert classifier.classify(550, "5.7.1", "Rejected") == "quota"


def test_without_builtins() -> None:
    classifier = BounceClassifier([BounceRule("routing", code=421)], builtin=False)
    assert classifier.classify(421, None, "Service not available") == "routing"
    assert classifier.classify(550, "5.1.1", "User unknown") == "other"
    assert BounceClassifier(builtin=False).classify(550, "5.1.1", "User unknown") == "other"


def test_rule_text_is_case_insensitive_and_searched() -> None:
    classifier = BounceClassifier([BounceRule("quota", text="casella piena")], builtin=False)
    assert classifier.classify(552, None, "5.2.2 Casella PIENA, riprova") == "quota"


def test_rules_load_from_config() -> None:
    rules = msgspec.convert(
        [{"category": "routing", "code": 421}, {"category": "quota", "text": "piena"}],
        list[BounceRule],
    )
    assert rules == [BounceRule("routing", code=421), BounceRule("quota", text="piena")]
    with pytest.raises(msgspec.ValidationError, match="catgory"):
        msgspec.convert([{"catgory": "routing", "code": 421}], list[BounceRule])
    with pytest.raises(msgspec.ValidationError, match="'hard'"):
        msgspec.convert([{"category": "hard", "code": 550}], list[BounceRule])


# ---- rule validation ----


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"category": "hard", "code": 550},
            r"BounceRule\.category 'hard' is not one of bad-mailbox",
        ),
        ({"category": "Bad-Mailbox", "code": 550}, r"category 'Bad-Mailbox'"),
        ({"category": "quota"}, r"at least one of enhanced, code, text or kind"),
        ({"category": "quota", "enhanced": "5.2.2.1"}, r"BounceRule\.enhanced '5\.2\.2\.1'"),
        ({"category": "quota", "enhanced": "3.2"}, r"BounceRule\.enhanced '3\.2'"),
        ({"category": "quota", "enhanced": "5."}, r"BounceRule\.enhanced '5\.'"),
        ({"category": "quota", "enhanced": "5.2.x"}, r"BounceRule\.enhanced '5\.2\.x'"),
        ({"category": "quota", "code": 55}, r"BounceRule\.code 55 is not a reply code"),
        ({"category": "quota", "code": 600}, r"BounceRule\.code 600"),
        ({"category": "quota", "code": True}, r"BounceRule\.code True"),
        ({"category": "quota", "text": "mailbox (full"}, r"BounceRule\.text 'mailbox \(full'"),
    ],
)
def test_rule_validation(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BounceRule(**fields)  # type: ignore[arg-type]


def test_classifier_takes_only_rules() -> None:
    with pytest.raises(TypeError, match="must be BounceRule"):
        BounceClassifier([("quota", "5.2.2")])  # type: ignore[list-item]


def test_builtin_rules_are_valid_and_categorised() -> None:
    # "other" too: an outcome of ours that says nothing about the recipient (a render
    # error naming a variable "user unknown") is kept from the text rules by its kind.
    assert {rule.category for rule in BUILTIN_RULES} == set(CATEGORIES)
