"""ferrymail: an outbound email delivery engine for ESPs (Rust core, asyncio orchestration)."""

from . import tracking
from .campaign import Campaign, DkimKey, Tracking, Unsubscribe
from .errors import ConfigError, Error, TemplateError, TokenError, WireError
from .render import RenderedMessage, RenderError, render
from .transport import Transport
from .wire import MxHost, Outcome, Recipient, Route, SmtpOptions

__all__ = [
    "Campaign",
    "ConfigError",
    "DkimKey",
    "Error",
    "MxHost",
    "Outcome",
    "Recipient",
    "RenderError",
    "RenderedMessage",
    "Route",
    "SmtpOptions",
    "TemplateError",
    "TokenError",
    "Tracking",
    "Transport",
    "Unsubscribe",
    "WireError",
    "render",
    "tracking",
]
