"""Type stub of the Rust extension ferrymail._core (checked by mypy.stubtest in the tests)."""

from typing import final

__all__ = ["CompiledCampaign", "compile_campaign", "render", "wire_roundtrip"]

@final
class CompiledCampaign: ...

def compile_campaign(spec: bytes) -> CompiledCampaign: ...
def render(
    campaign: CompiledCampaign, recipients: bytes, threads: int = 0, now_ms: int | None = None
) -> bytes: ...
def wire_roundtrip(kind: str, data: bytes) -> bytes: ...
