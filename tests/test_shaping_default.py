"""The shaping file shipped with ferrymail: it loads through the same loader, and each
provider reply it documents (the literal texts its comments cite) fires the intended rule."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from ferrymail.shaping import Automation, default_path, load

GMAIL = ("gmail.com", ["gmail-smtp-in.l.google.com", "alt1.gmail-smtp-in.l.google.com"])
WORKSPACE = ("ferry.example", ["aspmx.l.google.com"])
OUTLOOK = ("hotmail.com", ["hotmail-com.olc.protection.outlook.com"])
M365 = ("contoso.example", ["contoso-example.mail.protection.outlook.com"])
OTHER = ("example.net", ["mx.example.net"])
YAHOO = ("yahoo.com", ["mta5.am0.yahoodns.net", "mta6.am0.yahoodns.net"])

# (where, code, enhanced, text as the transport reports it: the lines of a multi-line
# reply without their code prefixes, joined by spaces), the rule that must fire, and
# how many times the reply must come for it to fire.
REPLIES = [
    (
        GMAIL,
        421,
        "4.7.28",
        "[203.0.113.42] Our system has detected an unusual rate of unsolicited mail "
        "originating from your IP address. To protect our users from spam, mail sent from "
        "your IP address has been temporarily rate limited. Please visit "
        "https://support.google.com/mail/?p=UnsolicitedRateLimitError to review our Bulk "
        "Email Senders Guidelines. - gsmtp",
        "gmail-rate-limited-4.7.28",
        1,
    ),
    (
        WORKSPACE,
        421,
        "4.7.0",
        "Our system has detected an unusual rate of unsolicited mail originating from your "
        "IP address. To protect our users from spam, mail sent from your IP address has "
        "been temporarily blocked. For more information, visit Prevent mail to Gmail users "
        "from being blocked or sent to spam.",
        "gmail-temporarily-blocked-4.7.0",
        1,
    ),
    (GMAIL, 421, "4.7.0", "Try again later, closing connection.", "gmail-try-again-later-4.7.0", 3),
    (
        GMAIL,
        550,
        "5.7.1",
        "[2001:db8::25 12] Our system has detected an unusual rate of unsolicited mail "
        "originating from your IP address. To protect our users from spam, mail sent from "
        "your IP address has been blocked. Please visit to review our Bulk Email Senders "
        "Guidelines. u66si15473913qki.107 - gsmtp",
        "gmail-blocked-5.7.1",
        1,
    ),
    (
        GMAIL,
        550,
        "5.7.1",
        "[111.140.0.1 12] Our system has detected that this message is likely unsolicited "
        "mail. To reduce the amount of spam sent to Gmail, this message has been blocked. "
        "Please visit http://support.google.com/mail/bin/answer.py?hl=en&answer=188131 for "
        "more information. mu18si1139639pab.287 - gsmtp",
        "gmail-likely-unsolicited-5.7.1",
        10,
    ),
    (
        M365,
        451,
        "4.7.500",
        "Server busy. Please try again later from [192.0.2.1]. (S77714)",
        "microsoft-server-busy-4.7.500",
        1,
    ),
    (
        OUTLOOK,
        550,
        "5.7.1",
        "Unfortunately, messages from [217.72.192.73] weren't sent. Please contact your "
        "Internet service provider since part of their network is on our block list "
        "(S3140). You can also refer your provider to "
        "http://mail.live.com/mail/troubleshooting.aspx#errors. "
        "[DB3EUR04FT003.eop-eur04.prod.protection.outlook.com]",
        "microsoft-block-list",
        1,
    ),
    (
        OUTLOOK,
        550,
        "5.7.1",
        "Unfortunately, messages from [204.11.58.44] weren't sent. Please contact your "
        "Internet service provider since part of their network is on our block list "
        "(AS3150). You can also refer your provider to "
        "http://mail.live.com/mail/troubleshooting.aspx#errors.",
        "microsoft-block-list",
        1,
    ),
    (
        M365,
        550,
        "5.7.606",
        "Access denied, banned sending IP [185.234.72.45]. To request removal from this "
        "list please visit https://sender.office.com/ and follow the directions. For more "
        "information please go to http://go.microsoft.com/fwlink/?LinkID=526655 AS(1430)",
        "microsoft-banned-ip",
        1,
    ),
    (M365, 550, "5.7.800", "Access denied, banned sender", "microsoft-banned-sender", 1),
    (
        YAHOO,
        421,
        "4.7.0",
        "[TS01] Messages from 192.0.2.1 temporarily deferred due to user complaints -; see "
        "http://postmaster.yahoo.com/421-ts01.html",
        "yahoo-deferred-ts01-ts04",
        1,
    ),
    (
        YAHOO,
        421,
        "4.7.0",
        "[TS02] Messages from 72.5.230.103 temporarily deferred due to user complaints - "
        "4.16.56.1; see http://postmaster.yahoo.com/421-ts02.html",
        "yahoo-deferred-ts01-ts04",
        1,
    ),
    (
        YAHOO,
        421,
        "4.7.0",
        "[TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume or "
        "user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes",
        "yahoo-deferred-ts01-ts04",
        1,
    ),
    (
        YAHOO,
        421,
        "4.7.1",
        "[TS03] All messages from 192.0.2.1 permanently deferred",
        "yahoo-permanently-deferred-ts03",
        1,
    ),
    (YAHOO, 554, "5.7.9", "Message not accepted for policy reasons.", "yahoo-policy-5.7.9", 5),
    # Postfix's own reply when a client passes smtpd_client_connection_count_limit.
    (
        OTHER,
        421,
        "4.7.0",
        "mx.example.net Error: too many connections from 192.0.2.1",
        "too-many-connections",
        3,
    ),
]


def test_the_default_file_loads() -> None:
    shaping = load(default_path())
    assert [p.key for p in shaping.providers] == ["google", "microsoft", "yahoo"]
    gmail = shaping.resolve("gmail.com", "gmail:25", GMAIL[1])
    assert gmail.provider == "provider.google"
    assert gmail.limits.connection_limit == 20
    yahoo = shaping.resolve("aol.com", "yahoo:25", ["mx-aol.mail.gm0.yahoodns.net"])
    assert yahoo.provider == "provider.yahoo"


def test_every_rule_cites_a_source_or_says_it_has_none() -> None:
    text = Path(default_path()).read_text()
    blocks = re.split(r"\n(?=\[)", text)
    for block in blocks:
        if block.startswith("[[") and "automation]]" in block.splitlines()[0]:
            previous = text[: text.index(block)].rsplit("\n\n", 1)[-1]
            assert "http" in previous or "No public source found" in previous, block


@pytest.mark.parametrize(
    ("where", "code", "enhanced", "text", "rule", "times"),
    REPLIES,
    ids=[f"{r[1]}-{r[2]}-{r[4]}" for r in REPLIES],
)
def test_a_documented_reply_fires_its_rule(
    where: tuple[str, list[str]], code: int, enhanced: str, text: str, rule: str, times: int
) -> None:
    shaping = load(default_path())
    domain, mx = where
    resolved = shaping.resolve(domain, ",".join(sorted(mx)) + ":25", mx)
    automation = Automation()
    fired = []
    for n in range(times):
        fired = automation.observe(
            resolved.limits.automation,
            site="site",
            source="ip1",
            campaign="c1",
            code=code,
            enhanced=enhanced,
            text=text,
            now=1_800_000_000.0 + n,
        )
        if n < times - 1:
            assert fired == [], f"fired early, on reply {n + 1} of {times}"
    assert [a.rule for a in fired] == [rule]


def test_replies_of_one_provider_do_not_fire_another_providers_rules() -> None:
    shaping = load(default_path())
    yahoo = shaping.resolve("yahoo.com", "y:25", YAHOO[1])
    fired = Automation().observe(
        yahoo.limits.automation,
        site="y",
        source="ip1",
        campaign="c1",
        code=421,
        enhanced="4.7.28",
        text="Our system has detected an unusual rate of unsolicited mail",
        now=0.0,
    )
    assert fired == []


def test_yahoo_permanently_deferred_is_classified_spam_related() -> None:
    from ferrymail.bounce import BounceClassifier

    shaping = load(default_path())
    rules = shaping.resolve("yahoo.com", "y:25", YAHOO[1]).limits.bounce_rules
    classifier = BounceClassifier(list(rules))
    text = "[TS03] All messages from 192.0.2.1 permanently deferred"
    assert classifier.classify(421, "4.7.1", text, "reply") == "spam-related"
