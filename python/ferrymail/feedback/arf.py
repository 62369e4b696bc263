"""Abuse reports (ARF, RFC 5965): the feedback-report part's fields -> a Complaint.

Who sends them: Yahoo (and AOL, now Yahoo's) through its Complaint Feedback Loop, for
the DKIM d= domain enrolled in Sender Hub, From "Yahoo Mail AntiSpam Feedback", with the
original attached (message/rfc822, full headers; at times headers only, as
text/rfc822-headers). Microsoft's JMRP (Outlook.com) sends ARF too, or in its older
"RFC822 attachment" format: a plain message from staff@hotmail.com with the original as
a message/rfc822 attachment and the recipient's address removed from it; matching then
needs the VERP token, the Message-ID or a tracking link. Microsoft's SNDS is data on a
web site, not mail. Other loops (Comcast, Fastmail, Zoho, Validity's universal feedback
loop for many ISPs) use ARF as RFC 5965 writes it. Gmail sends no per-message report to
most senders: its Feedback Loop is aggregate data in Postmaster Tools, keyed by a
Feedback-ID header, so Gmail complaints never reach this parser.
"""

from __future__ import annotations

from .addresses import address
from .mime import clean
from .model import Complaint

#: The feedback types that are complaints about a message (RFC 5965 §7.3). "not-spam"
#: (a user took a message out of the spam folder) and "auth-failure" (RFC 6591, a
#: DMARC/SPF/DKIM failure report) are reports, but nobody complained.
COMPLAINT_TYPES = frozenset({"abuse", "fraud", "virus", "other"})

#: The sender of Microsoft JMRP's non-ARF "RFC822 attachment" reports.
JMRP_SENDER = "staff@hotmail.com"


def complaint(fields: list[tuple[str, str]]) -> Complaint:
    """The feedback-report block (field names lower case) as a Complaint."""
    first: dict[str, str] = {}
    rcpts: list[str] = []
    domains: list[str] = []
    for name, value in fields:
        first.setdefault(name, value)
        if name == "original-rcpt-to" and (a := address(value)) and len(rcpts) < 100:
            rcpts.append(a)
        elif name == "reported-domain" and len(domains) < 100:
            domains.append(clean(value, 255))
    feedback_type = clean(first.get("feedback-type", "abuse")).lower() or "abuse"
    return Complaint(
        feedback_type=feedback_type.split()[0],
        user_agent=clean(first["user-agent"]) if "user-agent" in first else None,
        version=clean(first["version"], 32) if "version" in first else None,
        source_ip=clean(first["source-ip"], 64) if "source-ip" in first else None,
        original_rcpt_to=tuple(dict.fromkeys(rcpts)),
        original_mail_from=address(first.get("original-mail-from")),
        arrival_date=clean(first["arrival-date"], 128) if "arrival-date" in first else None,
        reported_domains=tuple(domains),
    )
