"""The exceptions ferrymail raises, all rooted at ferrymail.Error.

Per-recipient problems (a bad address, an undefined variable) are not exceptions: they
come back as data (`RenderError`) so that one recipient never fails a batch.
"""

from __future__ import annotations


class Error(Exception):
    """Root of every exception ferrymail raises."""


class ConfigError(Error, ValueError):
    """A campaign or setting is invalid; `field` names the setting."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


class TemplateError(ConfigError):
    """A template does not compile; `part`, `line` and `column` say where (1-based)."""

    def __init__(self, message: str, part: str, line: int, column: int) -> None:
        super().__init__(message, part)
        self.part = part
        self.line = line
        self.column = column


class TokenError(Error, ValueError):
    """A tracking or unsubscribe token is malformed, tampered with, or signed with another key."""


class WireError(Error):
    """Python and Rust disagree about a wire struct: a bug in ferrymail, never in input."""


class InternalError(Error, RuntimeError):
    """A fault inside ferrymail (a task of the Rust core failed, e.g. panicked): a bug to
    report, never a problem with the input. Retrying the operation is safe."""


class SpoolUnavailableError(Error, ConnectionError):
    """The spool's server cannot be reached, or the connection to it was lost during a
    call (`reason` says why, without the password). Nothing of the call is half done:
    it ran whole or not at all. The engine waits and calls again (spooler.py); the CLI
    says it in one line. The next call reconnects."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason
