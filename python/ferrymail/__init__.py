"""ferrymail: an outbound email delivery engine for ESPs (Rust core, asyncio orchestration)."""

from . import tracking
from .campaign import Campaign, DkimKey, Tracking, Unsubscribe
from .errors import ConfigError, Error, TemplateError, TokenError, WireError
from .render import RenderedMessage, RenderError, render
from .wire import Recipient

__all__ = [
    "Campaign",
    "ConfigError",
    "DkimKey",
    "Error",
    "Recipient",
    "RenderError",
    "RenderedMessage",
    "TemplateError",
    "TokenError",
    "Tracking",
    "Unsubscribe",
    "WireError",
    "render",
    "tracking",
]
