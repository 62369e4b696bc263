"""ferrymail: an outbound email delivery engine for ESPs (Rust core, asyncio orchestration)."""

import os
from importlib import metadata as _metadata

# mimalloc (the Rust core's allocator) madvises its heap into transparent huge pages;
# freeing and reusing message buffers then makes the kernel clear a 2 MB page again and
# again (5-12% of CPU in bench/smtp.py). Without THP it reuses 4 KB pages. mimalloc
# applies this with prctl(PR_SET_THP_DISABLE), which covers the whole process; set
# MIMALLOC_ALLOW_THP=1 before importing ferrymail to keep huge pages.
os.environ.setdefault("MIMALLOC_ALLOW_THP", "0")

from . import tracking, verp
from .bounce import BounceRule
from .campaign import Campaign, DkimKey, DkimKeys, Tracking, Unsubscribe, Verp
from .config import Config, SiteLimits
from .engine import Engine
from .errors import ConfigError, Error, InternalError, TemplateError, TokenError, WireError
from .events import Event
from .render import RenderedMessage, RenderError, render
from .retry import RetryPolicy
from .send import send
from .spool import Report
from .submit import SubmitResult
from .transport import Transport
from .wire import (
    ConnectionRate,
    MxHost,
    Outcome,
    OutcomeKind,
    Recipient,
    Route,
    SessionTimeouts,
    SmtpOptions,
)

try:
    #: The installed distribution's version (pyproject.toml), as `pip show` gives it.
    __version__: str = _metadata.version("ferrymail")
except _metadata.PackageNotFoundError:  # imported from a source tree, not installed
    __version__ = "0+unknown"

__all__ = [
    "BounceRule",
    "Campaign",
    "Config",
    "ConfigError",
    "ConnectionRate",
    "DkimKey",
    "DkimKeys",
    "Engine",
    "Error",
    "Event",
    "InternalError",
    "MxHost",
    "Outcome",
    "OutcomeKind",
    "Recipient",
    "RenderError",
    "RenderedMessage",
    "Report",
    "RetryPolicy",
    "Route",
    "SessionTimeouts",
    "SiteLimits",
    "SmtpOptions",
    "SubmitResult",
    "TemplateError",
    "TokenError",
    "Tracking",
    "Transport",
    "Unsubscribe",
    "Verp",
    "WireError",
    "render",
    "send",
    "tracking",
    "verp",
]
