"""ApiError: an answer other than success, as JSON {"error", "detail"} with its status."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """`error` is a short machine-readable word, `detail` what a person reads (or an
    object, e.g. a template error's part, line and column)."""

    def __init__(self, status: int, error: str, detail: Any = None) -> None:
        super().__init__(f"{status} {error}: {detail}")
        self.status = status
        self.error = error
        self.detail = detail
