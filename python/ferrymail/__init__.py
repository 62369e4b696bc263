"""ferrymail: an outbound email delivery engine for ESPs (Rust core, asyncio orchestration)."""

from . import tracking
from .bounce import BounceRule
from .campaign import Campaign, DkimKey, Tracking, Unsubscribe
from .config import Config, SiteLimits
from .engine import Engine
from .errors import ConfigError, Error, TemplateError, TokenError, WireError
from .events import Event
from .render import RenderedMessage, RenderError, render
from .retry import RetryPolicy
from .send import send
from .spool import Report
from .submit import SubmitResult
from .transport import Transport
from .wire import MxHost, Outcome, Recipient, Route, SmtpOptions

__all__ = [
    "BounceRule",
    "Campaign",
    "Config",
    "ConfigError",
    "DkimKey",
    "Engine",
    "Error",
    "Event",
    "MxHost",
    "Outcome",
    "Recipient",
    "RenderError",
    "RenderedMessage",
    "Report",
    "RetryPolicy",
    "Route",
    "SiteLimits",
    "SmtpOptions",
    "SubmitResult",
    "TemplateError",
    "TokenError",
    "Tracking",
    "Transport",
    "Unsubscribe",
    "WireError",
    "render",
    "send",
    "tracking",
]
