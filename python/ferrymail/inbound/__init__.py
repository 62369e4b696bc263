"""The bounce domain's listener: late bounces, complaints, auto-replies and mailto
unsubscribes, received over SMTP and written to the spool.

    server = InboundServer(spool, InboundConfig(domains=["bounces.example.com"], ...))
    await server.start("0.0.0.0", 25)

`ferrymail inbound` runs it from the command line.
"""

from __future__ import annotations

from .act import Handled, Handler
from .config import InboundConfig, load
from .listener import InboundServer
from .match import Matcher, message_digest

__all__ = [
    "Handled",
    "Handler",
    "InboundConfig",
    "InboundServer",
    "Matcher",
    "load",
    "message_digest",
]
