"""Type stub of the Rust extension ferrymail._core (checked by mypy.stubtest in the tests)."""

from typing import Any, final

__all__ = [
    "CompiledCampaign",
    "Delivery",
    "Transport",
    "_failing_task",
    "check_addresses",
    "compile_campaign",
    "open_token",
    "open_verp_token",
    "render",
    "seal_verp_token",
    "wire_roundtrip",
]

@final
class CompiledCampaign:
    @property
    def verp(self) -> bool: ...

@final
class Transport:
    def __new__(cls, options: bytes) -> Transport: ...
    def deliver(
        self,
        campaign: CompiledCampaign,
        recipients: bytes,
        route: bytes,
        now_ms: int | None = None,
        envelope_ids: list[int] | None = None,
    ) -> Any: ...
    def start(
        self,
        campaign: CompiledCampaign,
        recipients: bytes,
        route: bytes,
        now_ms: int | None = None,
        envelope_ids: list[int] | None = None,
    ) -> Delivery: ...
    def abort(self) -> None: ...
    def connections(self) -> tuple[int, int]: ...
    def close(self) -> Any: ...

@final
class Delivery:
    def next(self) -> Any: ...
    def cancel(self) -> None: ...

def check_addresses(addresses: list[str]) -> list[tuple[str, str | None]]: ...
def compile_campaign(spec: bytes) -> CompiledCampaign: ...
def open_token(token: str, secret: bytes) -> tuple[str, str, int | str, int | None, str | None]: ...
def open_verp_token(token: str, secrets: list[bytes]) -> int | None: ...
def seal_verp_token(row_id: int, secret: bytes) -> str: ...
def render(
    campaign: CompiledCampaign, recipients: bytes, threads: int = 0, now_ms: int | None = None
) -> bytes: ...
def wire_roundtrip(kind: str, data: bytes) -> bytes: ...

# A tokio task that panics with `message` (none when empty), its failure mapped as a
# delivery task's is: for the test of that mapping only.
def _failing_task(message: str) -> Any: ...
